//! What a consumer is doing, as the nodes running it report and as one word
//! for views, the console and gauges.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::DesiredState;

/// What one node's part of a consumer is doing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NodeState {
    #[default]
    Connecting,
    Running,
    Paused,
    /// The endpoint kept failing: fetching stops until a probe succeeds.
    BreakerOpen,
    Stopping,
    /// Crashed; started again after a backoff.
    Restarting,
}

/// The consumer as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ConsumerState {
    Running,
    BreakerOpen,
    Paused,
    Restarting,
    Starting,
    Stopping,
    Stopped,
    BrokerOffline,
    Deleted,
}

impl NodeState {
    pub const ALL: [NodeState; 6] = [
        Self::Connecting,
        Self::Running,
        Self::Paused,
        Self::BreakerOpen,
        Self::Stopping,
        Self::Restarting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::BreakerOpen => "breaker_open",
            Self::Stopping => "stopping",
            Self::Restarting => "restarting",
        }
    }

    /// The state a node recorded (as [`NodeState::as_str`] wrote it).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }
}

impl ConsumerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::BreakerOpen => "breaker_open",
            Self::Paused => "paused",
            Self::Restarting => "restarting",
            Self::Starting => "starting",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::BrokerOffline => "broker_offline",
            Self::Deleted => "deleted",
        }
    }

    /// One word for what the nodes are doing: the most active state any node
    /// reports, else what the operator asked for.
    pub fn observed(
        deleted: bool,
        desired: DesiredState,
        broker_online: bool,
        nodes: impl IntoIterator<Item = NodeState>,
    ) -> Self {
        if deleted {
            return Self::Deleted;
        }
        if !broker_online {
            return Self::BrokerOffline;
        }
        if desired == DesiredState::Stopped {
            return Self::Stopped;
        }
        let reported: Vec<NodeState> = nodes.into_iter().collect();
        let by_priority = [
            (NodeState::Running, Self::Running),
            (NodeState::BreakerOpen, Self::BreakerOpen),
            (NodeState::Paused, Self::Paused),
            (NodeState::Restarting, Self::Restarting),
            (NodeState::Connecting, Self::Starting),
            (NodeState::Stopping, Self::Stopping),
        ];
        for (node, state) in by_priority {
            if reported.contains(&node) {
                return state;
            }
        }
        match desired {
            DesiredState::Paused => Self::Paused,
            _ => Self::Starting,
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ConsumerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back() {
        for state in NodeState::ALL {
            assert_eq!(NodeState::parse(state.as_str()), Some(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        assert_eq!(NodeState::parse("dancing"), None);
        assert_eq!(
            serde_json::to_value(ConsumerState::BrokerOffline).unwrap(),
            ConsumerState::BrokerOffline.as_str()
        );
    }

    #[test]
    fn the_most_active_node_speaks_for_the_consumer() {
        use NodeState::*;
        let observed = |desired, online, nodes: &[NodeState]| {
            ConsumerState::observed(false, desired, online, nodes.iter().copied())
        };
        assert_eq!(
            observed(DesiredState::Running, true, &[Restarting, Running]),
            ConsumerState::Running
        );
        assert_eq!(
            observed(DesiredState::Running, true, &[Paused, BreakerOpen]),
            ConsumerState::BreakerOpen
        );
        assert_eq!(
            observed(DesiredState::Running, true, &[Connecting]),
            ConsumerState::Starting
        );
        assert_eq!(observed(DesiredState::Running, true, &[]), ConsumerState::Starting);
        assert_eq!(observed(DesiredState::Paused, true, &[]), ConsumerState::Paused);
        assert_eq!(
            observed(DesiredState::Stopped, true, &[Running]),
            ConsumerState::Stopped
        );
        assert_eq!(
            observed(DesiredState::Running, false, &[Running]),
            ConsumerState::BrokerOffline
        );
        assert_eq!(
            ConsumerState::observed(true, DesiredState::Running, false, [Running]),
            ConsumerState::Deleted
        );
    }
}
