//! Changes announced to every node: keys and apps (access), brokers and
//! consumers (configuration, announced by a trigger on their events).

/// What a node can listen for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// A key or an app changed; no payload.
    Access,
    /// A broker or consumer changed; the payload is `aggregate_type:id`.
    Config,
    /// Messages were published to a built-in topic; the payload is the topic.
    Topics,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Self::Access, Self::Config, Self::Topics];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Access => "bida_access",
            Self::Config => "bida_config",
            Self::Topics => "bida_topics",
        }
    }
}
