//! Broker operations for the API: register, edit, take offline, delete, and a
//! live look inside (health, Kafka topics, RabbitMQ queues).

use bida_domain::broker::{Broker, BrokerCommand, BrokerError, BrokerKind, BrokerSpec, Connection};
use bida_domain::consumer::{Consumer, Source};
use bida_domain::ValidationErrors;
use bida_store::{Store, StoreError};
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

use crate::commands::Commands;
use crate::secrets::{opened, Sealer};
use crate::sources::{KafkaAdmin, QueueInfo, RabbitAdmin, RabbitOverview, TopicInfo};

/// Longest a live look at a broker may take.
const LOOK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Rejected(String),
    #[error("the event store is unavailable ({0}); the request may or may not have taken effect")]
    Unavailable(String),
    #[error("the broker could not do it: {0}")]
    Broker(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            Self::Unavailable(e.to_string())
        } else {
            Self::Internal(e.to_string())
        }
    }
}

pub(crate) fn admin_error<E: std::error::Error>(e: AggregateError<E>, not_found: impl Fn(&E) -> bool) -> AdminError {
    match e {
        AggregateError::UserError(e) if not_found(&e) => AdminError::NotFound(e.to_string()),
        AggregateError::UserError(e) => AdminError::Rejected(e.to_string()),
        AggregateError::AggregateConflict => {
            AdminError::Rejected("changed concurrently; send the request again".into())
        }
        AggregateError::DatabaseConnectionError(e) => AdminError::Unavailable(e.to_string()),
        AggregateError::DeserializationError(e) | AggregateError::UnexpectedError(e) => {
            AdminError::Internal(e.to_string())
        }
    }
}

/// A change of a broker's settings; fields of the other kind are refused.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrokerPatch {
    pub name: Option<String>,
    /// RabbitMQ
    pub url: Option<String>,
    /// RabbitMQ
    pub management_url: Option<String>,
    /// Kafka
    pub bootstrap_servers: Option<String>,
    /// Kafka: replaces all extra client options.
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrokerHealth {
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub checked_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrokerView {
    pub id: String,
    pub name: String,
    pub kind: BrokerKind,
    /// Connection settings, passwords hidden.
    pub connection: Connection,
    pub online: bool,
    pub deleted: bool,
    /// Present when the broker was looked at live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<BrokerHealth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<TopicInfo>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<QueueInfo>>,
    /// RabbitMQ with a management API: connections, rates, and each node's
    /// memory, disk and file descriptors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rabbitmq: Option<RabbitOverview>,
}

#[derive(Clone)]
pub struct BrokerService {
    store: Store,
    commands: Commands<Broker>,
    /// Credentials are sealed with it before they are recorded.
    sealer: Option<Sealer>,
}

impl BrokerService {
    pub fn new(store: Store, sealer: Option<Sealer>) -> Self {
        Self {
            commands: Commands::new(&store),
            store,
            sealer,
        }
    }

    fn sealed(&self, spec: BrokerSpec) -> BrokerSpec {
        match &self.sealer {
            Some(sealer) => spec.map_secrets(|text| sealer.seal_text(text)),
            None => spec,
        }
    }

    async fn execute(&self, id: &str, command: BrokerCommand) -> Result<(), AdminError> {
        self.commands
            .execute(id, command)
            .await
            .map_err(|e| admin_error(e, |e| matches!(e, BrokerError::NotFound)))
    }

    pub async fn load(&self, id: &str) -> Result<Broker, AdminError> {
        match self.store.load_aggregate::<Broker>(id).await? {
            Some((broker, _)) if broker.spec().is_some() => Ok(opened(&broker, self.sealer.as_ref())),
            _ => Err(AdminError::NotFound(format!("no broker with id {id}"))),
        }
    }

    pub async fn register(&self, spec: BrokerSpec) -> Result<BrokerView, AdminError> {
        spec.validate().map_err(AdminError::Invalid)?;
        let id = Uuid::now_v7().to_string();
        let spec = self.sealed(spec);
        self.execute(&id, BrokerCommand::Register { spec, at: Utc::now() })
            .await?;
        self.view(&id, false).await
    }

    pub async fn update(&self, id: &str, patch: BrokerPatch) -> Result<BrokerView, AdminError> {
        let broker = self.load(id).await?;
        let mut spec = broker.spec().cloned().ok_or_else(|| AdminError::NotFound(id.into()))?;
        let mut errors = ValidationErrors::default();
        if let Some(name) = patch.name {
            spec.name = name;
        }
        match &mut spec.connection {
            Connection::Rabbitmq { url, management_url } => {
                if patch.bootstrap_servers.is_some() || patch.options.is_some() {
                    errors.add("bootstrap_servers", "is for Kafka brokers; this one is RabbitMQ");
                }
                if let Some(new) = patch.url {
                    *url = new;
                }
                if let Some(new) = patch.management_url {
                    *management_url = Some(new).filter(|m| !m.is_empty());
                }
            }
            Connection::Kafka {
                bootstrap_servers,
                options,
            } => {
                if patch.url.is_some() || patch.management_url.is_some() {
                    errors.add("url", "is for RabbitMQ brokers; this one is Kafka");
                }
                if let Some(new) = patch.bootstrap_servers {
                    *bootstrap_servers = new;
                }
                if let Some(new) = patch.options {
                    *options = new;
                }
            }
        }
        errors.finish(()).map_err(AdminError::Invalid)?;
        spec.validate().map_err(AdminError::Invalid)?;
        let spec = self.sealed(spec);
        self.execute(id, BrokerCommand::Update { spec, at: Utc::now() }).await?;
        self.view(id, false).await
    }

    pub async fn set_online(&self, id: &str, online: bool) -> Result<BrokerView, AdminError> {
        self.execute(id, BrokerCommand::SetOnline { online, at: Utc::now() })
            .await?;
        self.view(id, false).await
    }

    /// Refused while consumers still use the broker.
    pub async fn delete(&self, id: &str) -> Result<(), AdminError> {
        let users: Vec<String> = self
            .store
            .load_all::<Consumer>()
            .await?
            .into_iter()
            .filter(|(_, c, _)| !c.is_deleted() && c.spec().is_some_and(|s| s.broker_id == id))
            .map(|(consumer_id, _, _)| consumer_id)
            .collect();
        if !users.is_empty() {
            return Err(AdminError::Rejected(format!(
                "consumers still use this broker: {}; delete them first",
                users.join(", ")
            )));
        }
        self.execute(id, BrokerCommand::Delete { at: Utc::now() }).await
    }

    pub async fn list(&self) -> Result<Vec<BrokerView>, AdminError> {
        Ok(self
            .store
            .load_all::<Broker>()
            .await?
            .into_iter()
            .filter_map(|(id, broker, _)| Self::describe(&id, &broker))
            .collect())
    }

    fn describe(id: &str, broker: &Broker) -> Option<BrokerView> {
        let spec = broker.spec()?.redacted();
        Some(BrokerView {
            id: id.to_string(),
            name: spec.name.clone(),
            kind: spec.kind(),
            connection: spec.connection,
            online: broker.is_online(),
            deleted: broker.is_deleted(),
            health: None,
            topics: None,
            queues: None,
            rabbitmq: None,
        })
    }

    /// The broker; with `live`, also its health and what is inside it.
    pub async fn view(&self, id: &str, live: bool) -> Result<BrokerView, AdminError> {
        let broker = self.load(id).await?;
        let mut view = Self::describe(id, &broker).ok_or_else(|| AdminError::NotFound(id.into()))?;
        if !live {
            return Ok(view);
        }
        let Some(spec) = broker.spec() else { return Ok(view) };
        let looked = match &spec.connection {
            Connection::Kafka {
                bootstrap_servers,
                options,
            } => {
                let admin = KafkaAdmin::new(bootstrap_servers, options);
                tokio::time::timeout(LOOK_TIMEOUT, admin.topics())
                    .await
                    .map(|r| r.map(|topics| view.topics = Some(topics)))
            }
            Connection::Rabbitmq { url, management_url } => {
                let admin = RabbitAdmin::new(url, management_url.as_deref());
                let known = self.queues_of_consumers(id).await?;
                tokio::time::timeout(LOOK_TIMEOUT, async {
                    admin.check().await?;
                    view.queues = Some(admin.queues(&known).await?);
                    // The cluster figures need the `monitoring` tag; without
                    // them the broker is still reachable and its queues listed.
                    match admin.overview().await {
                        Ok(overview) => view.rabbitmq = overview,
                        Err(e) => tracing::debug!(error = %e, "RabbitMQ cluster figures unavailable"),
                    }
                    Ok(())
                })
                .await
            }
        };
        let error = match looked {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} s", LOOK_TIMEOUT.as_secs())),
        };
        view.health = Some(BrokerHealth {
            reachable: error.is_none(),
            error,
            checked_at: Utc::now(),
        });
        Ok(view)
    }

    async fn queues_of_consumers(&self, broker_id: &str) -> Result<Vec<String>, AdminError> {
        Ok(self
            .store
            .load_all::<Consumer>()
            .await?
            .into_iter()
            .filter_map(|(_, c, _)| match c.spec() {
                Some(spec) if spec.broker_id == broker_id && !c.is_deleted() => match &spec.source {
                    Source::Rabbitmq(source) => Some(source.queue.clone()),
                    Source::Kafka(_) => None,
                },
                _ => None,
            })
            .collect())
    }
}
