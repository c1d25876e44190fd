//! Changes announced to every node: keys and apps (access), brokers and
//! consumers (configuration, announced by a trigger on their events).

/// What a node can listen for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// A key or an app changed; no payload.
    Access,
    /// A broker or consumer changed; the payload is `aggregate_type:id`.
    Config,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Self::Access, Self::Config];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Access => "bida_access",
            Self::Config => "bida_config",
        }
    }
}
