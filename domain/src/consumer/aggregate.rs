use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

use super::{ConsumerPolicy, ConsumerSpec, Endpoint, SourceAnomaly, TaskNaming};

/// What the operator wants the consumer to do; nodes make it so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DesiredState {
    #[default]
    Running,
    Paused,
    Stopped,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
        }
    }
}

/// Where a Kafka consumer group starts again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "to", rename_all = "lowercase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// The first offset at or after this time, per partition.
    Timestamp {
        timestamp: DateTime<Utc>,
    },
    /// Explicit offsets.
    Offsets {
        offsets: Vec<PartitionOffset>,
    },
}

tagged_by_name!(OffsetReset, "to");

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartitionOffset {
    pub topic: String,
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub partition: i32,
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub offset: i64,
}

#[derive(Clone, Debug, PartialEq)]
// A consumer's spec is its largest variant by far; commands and events are
// few and short-lived, so boxing it would only make every match longer.
#[allow(clippy::large_enum_variant)]
pub enum ConsumerCommand {
    Create {
        spec: ConsumerSpec,
        at: DateTime<Utc>,
    },
    ChangeEndpoint {
        endpoint: Endpoint,
        at: DateTime<Utc>,
    },
    ChangePolicy {
        policy: ConsumerPolicy,
        at: DateTime<Utc>,
    },
    Pause {
        at: DateTime<Utc>,
    },
    Resume {
        at: DateTime<Utc>,
    },
    Stop {
        at: DateTime<Utc>,
    },
    Start {
        at: DateTime<Utc>,
    },
    Delete {
        at: DateTime<Utc>,
    },
    RecordCrash {
        node: String,
        error: String,
        /// Crashes in a row on that node, this one included.
        consecutive: u32,
        at: DateTime<Utc>,
    },
    /// Record offsets a node has already committed for the (stopped) group.
    RecordOffsetReset {
        reset: OffsetReset,
        committed: Vec<PartitionOffset>,
        at: DateTime<Utc>,
    },
    ParkLane {
        key: String,
        task_id: String,
        at: DateTime<Utc>,
    },
    ReleaseLane {
        key: String,
        at: DateTime<Utc>,
    },
    /// A node saw its source break the broker's promises.
    RecordAnomaly {
        node: String,
        anomaly: SourceAnomaly,
        at: DateTime<Utc>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
// A consumer's spec is its largest variant by far; commands and events are
// few and short-lived, so boxing it would only make every match longer.
#[allow(clippy::large_enum_variant)]
pub enum ConsumerEvent {
    ConsumerCreated {
        spec: ConsumerSpec,
        /// Absent from consumers created before ordered naming: hashed.
        #[serde(default)]
        naming: TaskNaming,
        at: DateTime<Utc>,
    },
    EndpointChanged {
        endpoint: Endpoint,
        at: DateTime<Utc>,
    },
    PolicyChanged {
        policy: ConsumerPolicy,
        at: DateTime<Utc>,
    },
    ConsumerPaused {
        at: DateTime<Utc>,
    },
    ConsumerResumed {
        at: DateTime<Utc>,
    },
    ConsumerStopped {
        at: DateTime<Utc>,
    },
    ConsumerStarted {
        at: DateTime<Utc>,
    },
    ConsumerDeleted {
        at: DateTime<Utc>,
    },
    ConsumerCrashed {
        node: String,
        error: String,
        #[serde(default)]
        consecutive: u32,
        at: DateTime<Utc>,
    },
    OffsetsReset {
        reset: OffsetReset,
        committed: Vec<PartitionOffset>,
        at: DateTime<Utc>,
    },
    /// A key's lane stopped after `task_id` used up its attempts; later
    /// messages with the key wait until an operator replays the lane.
    LaneParked {
        key: String,
        task_id: String,
        at: DateTime<Utc>,
    },
    LaneReleased {
        key: String,
        at: DateTime<Utc>,
    },
    SourceAnomalyRecorded {
        node: String,
        anomaly: SourceAnomaly,
        at: DateTime<Utc>,
    },
}

impl ConsumerEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::ConsumerCreated { .. } => "ConsumerCreated",
            Self::EndpointChanged { .. } => "EndpointChanged",
            Self::PolicyChanged { .. } => "PolicyChanged",
            Self::ConsumerPaused { .. } => "ConsumerPaused",
            Self::ConsumerResumed { .. } => "ConsumerResumed",
            Self::ConsumerStopped { .. } => "ConsumerStopped",
            Self::ConsumerStarted { .. } => "ConsumerStarted",
            Self::ConsumerDeleted { .. } => "ConsumerDeleted",
            Self::ConsumerCrashed { .. } => "ConsumerCrashed",
            Self::OffsetsReset { .. } => "OffsetsReset",
            Self::LaneParked { .. } => "LaneParked",
            Self::LaneReleased { .. } => "LaneReleased",
            Self::SourceAnomalyRecorded { .. } => "SourceAnomalyRecorded",
        }
    }
}

impl DomainEvent for ConsumerEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConsumerError {
    #[error("the consumer already exists")]
    AlreadyCreated,
    #[error("no such consumer")]
    NotFound,
    #[error("the consumer was deleted")]
    Deleted,
    #[error("cannot {action} a consumer that is {state}")]
    InvalidState { action: &'static str, state: &'static str },
    #[error("a {0} consumer has no offsets to reset")]
    NoOffsets(&'static str),
    #[error("the lane of key {0:?} is not parked")]
    LaneNotParked(String),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Consumer {
    spec: Option<ConsumerSpec>,
    state: DesiredState,
    deleted: bool,
    /// Parked key lanes: key → the task that used up its attempts.
    parked: BTreeMap<String, String>,
    crashes: u64,
    /// Offset resets so far: a message read again after one is a new task.
    resets: u64,
    /// The latest anomalies its sources reported, newest last.
    #[serde(default)]
    anomalies: VecDeque<RecordedAnomaly>,
    #[serde(default)]
    naming: TaskNaming,
}

/// Anomalies a consumer keeps for its status; all stay in its event history.
pub const ANOMALIES_KEPT: usize = 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecordedAnomaly {
    pub node: String,
    #[serde(flatten)]
    pub anomaly: SourceAnomaly,
    pub at: DateTime<Utc>,
}

impl Consumer {
    pub fn spec(&self) -> Option<&ConsumerSpec> {
        self.spec.as_ref()
    }

    pub fn state(&self) -> DesiredState {
        self.state
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    pub fn parked_lanes(&self) -> &BTreeMap<String, String> {
        &self.parked
    }

    pub fn crashes(&self) -> u64 {
        self.crashes
    }

    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// The id of the task `message_id` becomes after `epoch` offset resets.
    pub fn task_id(&self, consumer_id: &str, epoch: u64, message_id: &str) -> String {
        self.naming.task_id(consumer_id, epoch, message_id)
    }

    pub fn naming(&self) -> TaskNaming {
        self.naming
    }

    pub fn anomalies(&self) -> &VecDeque<RecordedAnomaly> {
        &self.anomalies
    }

    fn live(&self) -> Result<&ConsumerSpec, ConsumerError> {
        match (&self.spec, self.deleted) {
            (None, _) => Err(ConsumerError::NotFound),
            (Some(_), true) => Err(ConsumerError::Deleted),
            (Some(spec), false) => Ok(spec),
        }
    }

    fn transition(
        &self,
        action: &'static str,
        from: &[DesiredState],
        event: ConsumerEvent,
    ) -> Result<Vec<ConsumerEvent>, ConsumerError> {
        self.live()?;
        if from.contains(&self.state) {
            Ok(vec![event])
        } else {
            Err(ConsumerError::InvalidState {
                action,
                state: self.state.as_str(),
            })
        }
    }

    pub fn decide(&self, command: ConsumerCommand) -> Result<Vec<ConsumerEvent>, ConsumerError> {
        use DesiredState::{Paused, Running, Stopped};
        match command {
            ConsumerCommand::Create { spec, at } => match self.spec {
                Some(_) => Err(ConsumerError::AlreadyCreated),
                None => Ok(vec![ConsumerEvent::ConsumerCreated {
                    spec,
                    naming: TaskNaming::Ordered,
                    at,
                }]),
            },
            ConsumerCommand::ChangeEndpoint { endpoint, at } => {
                self.live()?;
                Ok(vec![ConsumerEvent::EndpointChanged { endpoint, at }])
            }
            ConsumerCommand::ChangePolicy { policy, at } => {
                self.live()?;
                Ok(vec![ConsumerEvent::PolicyChanged { policy, at }])
            }
            ConsumerCommand::Pause { at } => self.transition("pause", &[Running], ConsumerEvent::ConsumerPaused { at }),
            ConsumerCommand::Resume { at } => {
                self.transition("resume", &[Paused], ConsumerEvent::ConsumerResumed { at })
            }
            ConsumerCommand::Stop { at } => {
                self.transition("stop", &[Running, Paused], ConsumerEvent::ConsumerStopped { at })
            }
            ConsumerCommand::Start { at } => {
                self.transition("start", &[Stopped], ConsumerEvent::ConsumerStarted { at })
            }
            ConsumerCommand::Delete { at } => {
                self.live()?;
                Ok(vec![ConsumerEvent::ConsumerDeleted { at }])
            }
            ConsumerCommand::RecordCrash {
                node,
                error,
                consecutive,
                at,
            } => {
                self.live()?;
                Ok(vec![ConsumerEvent::ConsumerCrashed {
                    node,
                    error,
                    consecutive,
                    at,
                }])
            }
            ConsumerCommand::RecordOffsetReset { reset, committed, at } => {
                let spec = self.live()?;
                let kind = spec.source.kind();
                if !kind.capabilities().offset_reset {
                    return Err(ConsumerError::NoOffsets(kind.title()));
                }
                self.transition(
                    "reset the offsets of",
                    &[Stopped],
                    ConsumerEvent::OffsetsReset { reset, committed, at },
                )
            }
            ConsumerCommand::ParkLane { key, task_id, at } => {
                self.live()?;
                Ok(vec![ConsumerEvent::LaneParked { key, task_id, at }])
            }
            ConsumerCommand::ReleaseLane { key, at } => {
                self.live()?;
                if !self.parked.contains_key(&key) {
                    return Err(ConsumerError::LaneNotParked(key));
                }
                Ok(vec![ConsumerEvent::LaneReleased { key, at }])
            }
            ConsumerCommand::RecordAnomaly { node, anomaly, at } => {
                self.live()?;
                Ok(vec![ConsumerEvent::SourceAnomalyRecorded { node, anomaly, at }])
            }
        }
    }

    pub fn apply_event(&mut self, event: &ConsumerEvent) {
        match event {
            ConsumerEvent::ConsumerCreated { spec, naming, .. } => {
                self.spec = Some(spec.clone());
                self.naming = *naming;
                self.state = DesiredState::Running;
            }
            ConsumerEvent::EndpointChanged { endpoint, .. } => {
                if let Some(spec) = &mut self.spec {
                    spec.endpoint = endpoint.clone();
                }
            }
            ConsumerEvent::PolicyChanged { policy, .. } => {
                if let Some(spec) = &mut self.spec {
                    spec.policy = policy.clone();
                }
            }
            ConsumerEvent::ConsumerPaused { .. } => self.state = DesiredState::Paused,
            ConsumerEvent::ConsumerResumed { .. } | ConsumerEvent::ConsumerStarted { .. } => {
                self.state = DesiredState::Running
            }
            ConsumerEvent::ConsumerStopped { .. } => self.state = DesiredState::Stopped,
            ConsumerEvent::ConsumerDeleted { .. } => self.deleted = true,
            ConsumerEvent::ConsumerCrashed { .. } => self.crashes += 1,
            ConsumerEvent::OffsetsReset { .. } => self.resets += 1,
            ConsumerEvent::LaneParked { key, task_id, .. } => {
                self.parked.insert(key.clone(), task_id.clone());
            }
            ConsumerEvent::LaneReleased { key, .. } => {
                self.parked.remove(key);
            }
            ConsumerEvent::SourceAnomalyRecorded { node, anomaly, at } => {
                if self.anomalies.len() == ANOMALIES_KEPT {
                    self.anomalies.pop_front();
                }
                self.anomalies.push_back(RecordedAnomaly {
                    node: node.clone(),
                    anomaly: anomaly.clone(),
                    at: *at,
                });
            }
        }
    }
}

decided_aggregate!(Consumer, "consumer", ConsumerCommand, ConsumerEvent, ConsumerError);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BrokerKind;
    use crate::consumer::{ConsumerInput, PolicyDefaults};
    use cqrs_es::test::TestFramework;

    /// A consumer of Kafka (which has offsets) or of RabbitMQ (which has none).
    fn spec(kind: BrokerKind) -> ConsumerSpec {
        let source = if kind == BrokerKind::Kafka {
            serde_json::json!({"topics": ["t"], "group": "g"})
        } else {
            assert_eq!(kind, BrokerKind::Rabbitmq);
            serde_json::json!({"queue": "q"})
        };
        serde_json::from_value::<ConsumerInput>(serde_json::json!({
            "name": "c", "broker_id": "b", "source": source, "endpoint": {"url": "http://h/"}
        }))
        .unwrap()
        .into_spec(kind, &PolicyDefaults::default())
        .unwrap()
    }

    fn created(kind: BrokerKind) -> ConsumerEvent {
        ConsumerEvent::ConsumerCreated {
            spec: spec(kind),
            naming: TaskNaming::Ordered,
            at: Utc::now(),
        }
    }

    #[test]
    fn new_consumers_name_tasks_in_order_and_older_ones_keep_hashing() {
        let at = Utc::now();
        let mut new = Consumer::default();
        for event in new
            .decide(ConsumerCommand::Create {
                spec: spec(BrokerKind::Kafka),
                at,
            })
            .unwrap()
        {
            new.apply_event(&event);
        }
        assert_eq!(new.naming(), TaskNaming::Ordered);

        // An event written before naming was recorded.
        let mut old = serde_json::to_value(created(BrokerKind::Kafka)).unwrap();
        old["ConsumerCreated"].as_object_mut().unwrap().remove("naming");
        let old: ConsumerEvent = serde_json::from_value(old).unwrap();
        let mut older = Consumer::default();
        older.apply_event(&old);
        assert_eq!(older.naming(), TaskNaming::Hashed);
        let message = "kafka:t:0:41";
        assert_eq!(
            older.task_id("c1", 0, message),
            TaskNaming::Hashed.task_id("c1", 0, message)
        );
        assert_ne!(older.task_id("c1", 0, message), new.task_id("c1", 0, message));
    }

    #[test]
    fn pause_resume_stop_start() {
        let at = Utc::now();
        TestFramework::<Consumer>::with(())
            .given(vec![created(BrokerKind::Rabbitmq)])
            .when(ConsumerCommand::Pause { at })
            .then_expect_events(vec![ConsumerEvent::ConsumerPaused { at }]);
        TestFramework::<Consumer>::with(())
            .given(vec![created(BrokerKind::Rabbitmq)])
            .when(ConsumerCommand::Resume { at })
            .then_expect_error(ConsumerError::InvalidState {
                action: "resume",
                state: "running",
            });
        TestFramework::<Consumer>::with(())
            .given(vec![
                created(BrokerKind::Rabbitmq),
                ConsumerEvent::ConsumerPaused { at },
            ])
            .when(ConsumerCommand::Stop { at })
            .then_expect_events(vec![ConsumerEvent::ConsumerStopped { at }]);
        TestFramework::<Consumer>::with(())
            .given(vec![
                created(BrokerKind::Rabbitmq),
                ConsumerEvent::ConsumerStopped { at },
            ])
            .when(ConsumerCommand::Start { at })
            .then_expect_events(vec![ConsumerEvent::ConsumerStarted { at }]);
    }

    #[test]
    fn anomalies_are_recorded_and_the_latest_kept() {
        let at = Utc::now();
        let gap = |from: i64| SourceAnomaly::OffsetGap {
            at: crate::consumer::TopicPartition {
                topic: "t".into(),
                partition: 0,
            },
            from,
            to: from + 5,
        };
        let record = ConsumerCommand::RecordAnomaly {
            node: "n1".into(),
            anomaly: gap(10),
            at,
        };
        TestFramework::<Consumer>::with(())
            .given(vec![created(BrokerKind::Kafka)])
            .when(record.clone())
            .then_expect_events(vec![ConsumerEvent::SourceAnomalyRecorded {
                node: "n1".into(),
                anomaly: gap(10),
                at,
            }]);
        TestFramework::<Consumer>::with(())
            .given(vec![created(BrokerKind::Kafka), ConsumerEvent::ConsumerDeleted { at }])
            .when(record)
            .then_expect_error(ConsumerError::Deleted);

        let mut consumer = Consumer::default();
        consumer.apply_event(&created(BrokerKind::Kafka));
        for from in 0..(ANOMALIES_KEPT as i64 + 3) {
            consumer.apply_event(&ConsumerEvent::SourceAnomalyRecorded {
                node: "n1".into(),
                anomaly: gap(from),
                at,
            });
        }
        assert_eq!(consumer.anomalies().len(), ANOMALIES_KEPT);
        assert_eq!(consumer.anomalies().front().map(|a| a.anomaly.clone()), Some(gap(3)));
        assert_eq!(
            consumer.anomalies().back().map(|a| a.anomaly.clone()),
            Some(gap(ANOMALIES_KEPT as i64 + 2))
        );
    }

    #[test]
    fn offsets_are_reset_only_on_a_stopped_kafka_consumer() {
        let at = Utc::now();
        let reset = || ConsumerCommand::RecordOffsetReset {
            reset: OffsetReset::Earliest,
            committed: vec![],
            at,
        };
        TestFramework::<Consumer>::with(())
            .given(vec![created(BrokerKind::Kafka)])
            .when(reset())
            .then_expect_error(ConsumerError::InvalidState {
                action: "reset the offsets of",
                state: "running",
            });
        TestFramework::<Consumer>::with(())
            .given(vec![
                created(BrokerKind::Rabbitmq),
                ConsumerEvent::ConsumerStopped { at },
            ])
            .when(reset())
            .then_expect_error(ConsumerError::NoOffsets("RabbitMQ"));
        TestFramework::<Consumer>::with(())
            .given(vec![created(BrokerKind::Kafka), ConsumerEvent::ConsumerStopped { at }])
            .when(reset())
            .then_expect_events(vec![ConsumerEvent::OffsetsReset {
                reset: OffsetReset::Earliest,
                committed: vec![],
                at,
            }]);
    }

    #[test]
    fn lanes_park_and_release() {
        let at = Utc::now();
        let mut consumer = Consumer::default();
        consumer.apply_event(&created(BrokerKind::Kafka));
        consumer.apply_event(&ConsumerEvent::LaneParked {
            key: "k".into(),
            task_id: "t".into(),
            at,
        });
        assert_eq!(consumer.parked_lanes()["k"], "t");
        assert_eq!(
            consumer.decide(ConsumerCommand::ReleaseLane {
                key: "other".into(),
                at
            }),
            Err(ConsumerError::LaneNotParked("other".into()))
        );
        let events = consumer
            .decide(ConsumerCommand::ReleaseLane { key: "k".into(), at })
            .unwrap();
        consumer.apply_event(&events[0]);
        assert!(consumer.parked_lanes().is_empty());
    }

    #[test]
    fn a_deleted_consumer_takes_no_commands() {
        let at = Utc::now();
        TestFramework::<Consumer>::with(())
            .given(vec![created(BrokerKind::Kafka), ConsumerEvent::ConsumerDeleted { at }])
            .when(ConsumerCommand::Start { at })
            .then_expect_error(ConsumerError::Deleted);
    }
}
