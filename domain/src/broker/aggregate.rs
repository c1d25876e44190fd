use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::BrokerSpec;

#[derive(Clone, Debug, PartialEq)]
pub enum BrokerCommand {
    Register {
        spec: BrokerSpec,
        at: DateTime<Utc>,
    },
    Update {
        spec: BrokerSpec,
        at: DateTime<Utc>,
    },
    /// Offline: every consumer on the broker stops cleanly until it is back online.
    SetOnline {
        online: bool,
        at: DateTime<Utc>,
    },
    Delete {
        at: DateTime<Utc>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BrokerEvent {
    BrokerRegistered { spec: BrokerSpec, at: DateTime<Utc> },
    BrokerUpdated { spec: BrokerSpec, at: DateTime<Utc> },
    BrokerTakenOffline { at: DateTime<Utc> },
    BrokerBroughtOnline { at: DateTime<Utc> },
    BrokerDeleted { at: DateTime<Utc> },
}

impl BrokerEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::BrokerRegistered { .. } => "BrokerRegistered",
            Self::BrokerUpdated { .. } => "BrokerUpdated",
            Self::BrokerTakenOffline { .. } => "BrokerTakenOffline",
            Self::BrokerBroughtOnline { .. } => "BrokerBroughtOnline",
            Self::BrokerDeleted { .. } => "BrokerDeleted",
        }
    }
}

impl DomainEvent for BrokerEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("the broker already exists")]
    AlreadyRegistered,
    #[error("no such broker")]
    NotFound,
    #[error("the broker was deleted")]
    Deleted,
    #[error("a broker's kind cannot change (it is {0}); register a new broker instead")]
    KindChanged(&'static str),
    #[error("the broker is already {0}")]
    Unchanged(&'static str),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Broker {
    spec: Option<BrokerSpec>,
    online: bool,
    deleted: bool,
}

impl Broker {
    /// The built-in broker (Bida's own topics): never registered, always
    /// online, under the id [`crate::kinds::builtin::BROKER_ID`].
    pub fn builtin() -> Self {
        Self {
            spec: Some(BrokerSpec {
                name: "Bida topics".into(),
                connection: crate::kinds::Connection::Builtin(Default::default()),
            }),
            online: true,
            deleted: false,
        }
    }

    pub fn spec(&self) -> Option<&BrokerSpec> {
        self.spec.as_ref()
    }

    /// The broker with its spec's credentials mapped by `f` (see
    /// [`BrokerSpec::map_secrets`]).
    pub fn map_secrets(&self, f: impl Fn(&str) -> String) -> Self {
        Self {
            spec: self.spec.as_ref().map(|spec| spec.map_secrets(f)),
            ..self.clone()
        }
    }

    pub fn is_online(&self) -> bool {
        self.online && !self.deleted
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// The spec of a registered broker that was not deleted.
    fn live(&self) -> Result<&BrokerSpec, BrokerError> {
        match (&self.spec, self.deleted) {
            (None, _) => Err(BrokerError::NotFound),
            (Some(_), true) => Err(BrokerError::Deleted),
            (Some(spec), false) => Ok(spec),
        }
    }

    pub fn decide(&self, command: BrokerCommand) -> Result<Vec<BrokerEvent>, BrokerError> {
        match command {
            BrokerCommand::Register { spec, at } => match self.spec {
                Some(_) => Err(BrokerError::AlreadyRegistered),
                None => Ok(vec![BrokerEvent::BrokerRegistered { spec, at }]),
            },
            BrokerCommand::Update { spec, at } => {
                let current = self.live()?;
                if spec.kind() != current.kind() {
                    return Err(BrokerError::KindChanged(current.kind().as_str()));
                }
                Ok(vec![BrokerEvent::BrokerUpdated { spec, at }])
            }
            BrokerCommand::SetOnline { online, at } => {
                self.live()?;
                match (online, self.online) {
                    (true, true) => Err(BrokerError::Unchanged("online")),
                    (false, false) => Err(BrokerError::Unchanged("offline")),
                    (true, false) => Ok(vec![BrokerEvent::BrokerBroughtOnline { at }]),
                    (false, true) => Ok(vec![BrokerEvent::BrokerTakenOffline { at }]),
                }
            }
            BrokerCommand::Delete { at } => {
                self.live()?;
                Ok(vec![BrokerEvent::BrokerDeleted { at }])
            }
        }
    }

    pub fn apply_event(&mut self, event: &BrokerEvent) {
        match event {
            BrokerEvent::BrokerRegistered { spec, .. } => {
                self.spec = Some(spec.clone());
                self.online = true;
            }
            BrokerEvent::BrokerUpdated { spec, .. } => self.spec = Some(spec.clone()),
            BrokerEvent::BrokerTakenOffline { .. } => self.online = false,
            BrokerEvent::BrokerBroughtOnline { .. } => self.online = true,
            BrokerEvent::BrokerDeleted { .. } => self.deleted = true,
        }
    }
}

decided_aggregate!(Broker, "broker", BrokerCommand, BrokerEvent, BrokerError);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Connection;
    use cqrs_es::test::TestFramework;

    fn spec(name: &str) -> BrokerSpec {
        BrokerSpec {
            name: name.into(),
            connection: Connection::Rabbitmq(crate::kinds::rabbitmq::RabbitmqConnection {
                url: "amqp://127.0.0.1:5672/%2f".into(),
                management_url: None,
            }),
        }
    }

    fn registered() -> BrokerEvent {
        BrokerEvent::BrokerRegistered {
            spec: spec("mq"),
            at: Utc::now(),
        }
    }

    #[test]
    fn lifecycle() {
        let at = Utc::now();
        TestFramework::<Broker>::with(())
            .given(vec![registered()])
            .when(BrokerCommand::SetOnline { online: false, at })
            .then_expect_events(vec![BrokerEvent::BrokerTakenOffline { at }]);
        TestFramework::<Broker>::with(())
            .given(vec![registered(), BrokerEvent::BrokerTakenOffline { at }])
            .when(BrokerCommand::SetOnline { online: false, at })
            .then_expect_error(BrokerError::Unchanged("offline"));
        TestFramework::<Broker>::with(())
            .given(vec![registered(), BrokerEvent::BrokerDeleted { at }])
            .when(BrokerCommand::Update { spec: spec("x"), at })
            .then_expect_error(BrokerError::Deleted);
    }

    #[test]
    fn the_kind_is_fixed() {
        let kafka = BrokerSpec {
            name: "k".into(),
            connection: Connection::Kafka(crate::kinds::kafka::KafkaConnection {
                bootstrap_servers: "h:9092".into(),
                options: Default::default(),
            }),
        };
        TestFramework::<Broker>::with(())
            .given(vec![registered()])
            .when(BrokerCommand::Update {
                spec: kafka,
                at: Utc::now(),
            })
            .then_expect_error(BrokerError::KindChanged("rabbitmq"));
    }

    #[test]
    fn unknown_brokers_take_no_commands() {
        TestFramework::<Broker>::with(())
            .given_no_previous_events()
            .when(BrokerCommand::Delete { at: Utc::now() })
            .then_expect_error(BrokerError::NotFound);
    }
}
