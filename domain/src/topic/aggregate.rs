use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::{TopicName, TopicSpec};

#[derive(Clone, Debug, PartialEq)]
pub enum TopicCommand {
    Create {
        name: TopicName,
        spec: TopicSpec,
        at: DateTime<Utc>,
    },
    Change {
        spec: TopicSpec,
        at: DateTime<Utc>,
    },
    Delete {
        at: DateTime<Utc>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TopicEvent {
    TopicCreated {
        name: TopicName,
        spec: TopicSpec,
        at: DateTime<Utc>,
    },
    TopicChanged {
        spec: TopicSpec,
        at: DateTime<Utc>,
    },
    /// Its messages and its subscriptions' positions go with it.
    TopicDeleted {
        at: DateTime<Utc>,
    },
}

impl TopicEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::TopicCreated { .. } => "TopicCreated",
            Self::TopicChanged { .. } => "TopicChanged",
            Self::TopicDeleted { .. } => "TopicDeleted",
        }
    }
}

impl DomainEvent for TopicEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("the topic exists already")]
    Exists,
    #[error("no such topic")]
    NotFound,
    #[error("a topic's partitions can grow but not shrink (it has {0})")]
    Shrunk(u16),
    #[error("nothing to change")]
    Unchanged,
}

/// A topic's life; a deleted topic's name can be taken again, as a new
/// topic whose offsets start at 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Topic {
    name: Option<TopicName>,
    spec: Option<TopicSpec>,
    created_at: Option<DateTime<Utc>>,
}

impl Topic {
    /// The topic's spec while it exists.
    pub fn spec(&self) -> Option<&TopicSpec> {
        self.spec.as_ref()
    }

    pub fn name(&self) -> Option<&TopicName> {
        self.name.as_ref()
    }

    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.created_at
    }

    pub fn decide(&self, command: TopicCommand) -> Result<Vec<TopicEvent>, TopicError> {
        match command {
            TopicCommand::Create { name, spec, at } => match self.spec {
                Some(_) => Err(TopicError::Exists),
                None => Ok(vec![TopicEvent::TopicCreated { name, spec, at }]),
            },
            TopicCommand::Change { spec, at } => {
                let current = self.spec.ok_or(TopicError::NotFound)?;
                if spec.partitions < current.partitions {
                    return Err(TopicError::Shrunk(current.partitions));
                }
                if spec == current {
                    return Err(TopicError::Unchanged);
                }
                Ok(vec![TopicEvent::TopicChanged { spec, at }])
            }
            TopicCommand::Delete { at } => {
                self.spec.ok_or(TopicError::NotFound)?;
                Ok(vec![TopicEvent::TopicDeleted { at }])
            }
        }
    }

    pub fn apply_event(&mut self, event: &TopicEvent) {
        match event {
            TopicEvent::TopicCreated { name, spec, at } => {
                self.name = Some(name.clone());
                self.spec = Some(*spec);
                self.created_at = Some(*at);
            }
            TopicEvent::TopicChanged { spec, .. } => self.spec = Some(*spec),
            TopicEvent::TopicDeleted { .. } => {
                self.spec = None;
                self.created_at = None;
            }
        }
    }
}

decided_aggregate!(Topic, "topic", TopicCommand, TopicEvent, TopicError);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::DEFAULT_RETENTION;
    use cqrs_es::test::TestFramework;

    fn spec(partitions: u16) -> TopicSpec {
        TopicSpec {
            partitions,
            retention: DEFAULT_RETENTION,
        }
    }

    fn created(partitions: u16, at: DateTime<Utc>) -> TopicEvent {
        TopicEvent::TopicCreated {
            name: "orders".parse().unwrap(),
            spec: spec(partitions),
            at,
        }
    }

    #[test]
    fn lifecycle() {
        let at = Utc::now();
        TestFramework::<Topic>::with(())
            .given(vec![created(2, at)])
            .when(TopicCommand::Create {
                name: "orders".parse().unwrap(),
                spec: spec(2),
                at,
            })
            .then_expect_error(TopicError::Exists);
        TestFramework::<Topic>::with(())
            .given(vec![created(4, at)])
            .when(TopicCommand::Change { spec: spec(2), at })
            .then_expect_error(TopicError::Shrunk(4));
        TestFramework::<Topic>::with(())
            .given(vec![created(4, at)])
            .when(TopicCommand::Change { spec: spec(4), at })
            .then_expect_error(TopicError::Unchanged);
        TestFramework::<Topic>::with(())
            .given(vec![created(4, at), TopicEvent::TopicDeleted { at }])
            .when(TopicCommand::Delete { at })
            .then_expect_error(TopicError::NotFound);
        // A deleted topic's name is free again, with fewer partitions if wanted.
        TestFramework::<Topic>::with(())
            .given(vec![created(4, at), TopicEvent::TopicDeleted { at }])
            .when(TopicCommand::Create {
                name: "orders".parse().unwrap(),
                spec: spec(1),
                at,
            })
            .then_expect_events(vec![TopicEvent::TopicCreated {
                name: "orders".parse().unwrap(),
                spec: spec(1),
                at,
            }]);
    }
}
