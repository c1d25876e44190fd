//! Broker operations for the API: register, edit, take offline, delete, and a
//! live look inside (health, Kafka topics, RabbitMQ queues).

use bida_domain::broker::{Broker, BrokerCommand, BrokerError, BrokerKind, BrokerSpec, Capabilities, Connection};
use bida_domain::consumer::{Consumer, Source};
use bida_domain::kinds::builtin;
use bida_domain::ValidationErrors;
use bida_store::{Store, StoreError};
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

use crate::commands::Commands;
use crate::secrets::{opened, Sealer};

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

/// A change of a broker's settings: its name, and any settings of its kind
/// (the fields it was registered with; `null` or `""` clears an optional
/// one, `options` replaces all of Kafka's). Settings of another kind are
/// refused by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrokerPatch {
    pub name: Option<String>,
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub settings: serde_json::Map<String, serde_json::Value>,
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
    /// What its kind can do beyond delivering messages.
    pub capabilities: Capabilities,
    /// Present when the broker was looked at live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<BrokerHealth>,
    /// Present when the broker was looked at live: what is inside it, by
    /// kind (Kafka's `topics`; RabbitMQ's `queues` and, with a management
    /// API, `rabbitmq`: connections, rates and each node's memory, disk and
    /// file descriptors).
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub inside: serde_json::Map<String, serde_json::Value>,
    /// Messages ever written per destination and the publish rate, where
    /// the broker tells, and its destinations and facts for people: for the
    /// console and gauges.
    #[serde(skip)]
    pub figures: Option<crate::sources::Inspection>,
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
        if id == builtin::BROKER_ID {
            return Ok(Broker::builtin());
        }
        match self.store.load_aggregate::<Broker>(id).await? {
            Some((broker, _)) if broker.spec().is_some() => Ok(opened(&broker, self.sealer.as_ref())),
            _ => Err(AdminError::NotFound(format!("no broker with id {id}"))),
        }
    }

    /// Whether the broker is there and marked online, without opening its
    /// secrets.
    pub async fn is_online(&self, id: &str) -> bool {
        if id == builtin::BROKER_ID {
            return Broker::builtin().is_online();
        }
        matches!(self.store.load_aggregate::<Broker>(id).await, Ok(Some((broker, _))) if broker.spec().is_some() && broker.is_online())
    }

    pub async fn register(&self, spec: BrokerSpec) -> Result<BrokerView, AdminError> {
        if !spec.kind().registered() {
            return Err(AdminError::Rejected(format!(
                "the built-in broker is always there, as `{}`: create topics with POST /v1/topics",
                builtin::BROKER_ID
            )));
        }
        spec.validate().map_err(AdminError::Invalid)?;
        let id = Uuid::now_v7().to_string();
        let spec = self.sealed(spec);
        self.execute(&id, BrokerCommand::Register { spec, at: Utc::now() })
            .await?;
        self.view(&id, false).await
    }

    /// The built-in broker is not registered, so not changed either.
    fn registered(id: &str) -> Result<(), AdminError> {
        match id {
            builtin::BROKER_ID => Err(AdminError::Rejected(
                "the built-in broker is part of Bida: it cannot be changed, taken offline or deleted".into(),
            )),
            _ => Ok(()),
        }
    }

    pub async fn update(&self, id: &str, patch: BrokerPatch) -> Result<BrokerView, AdminError> {
        Self::registered(id)?;
        let broker = self.load(id).await?;
        let mut spec = broker.spec().cloned().ok_or_else(|| AdminError::NotFound(id.into()))?;
        let mut errors = ValidationErrors::default();
        if let Some(name) = patch.name {
            spec.name = name;
        }
        if !patch.settings.is_empty() {
            if let Some(connection) = spec.connection.patched(patch.settings, &mut errors) {
                spec.connection = connection;
            }
        }
        errors.finish(()).map_err(AdminError::Invalid)?;
        spec.validate().map_err(AdminError::Invalid)?;
        let spec = self.sealed(spec);
        self.execute(id, BrokerCommand::Update { spec, at: Utc::now() }).await?;
        self.view(id, false).await
    }

    pub async fn set_online(&self, id: &str, online: bool) -> Result<BrokerView, AdminError> {
        Self::registered(id)?;
        self.execute(id, BrokerCommand::SetOnline { online, at: Utc::now() })
            .await?;
        self.view(id, false).await
    }

    /// Refused while consumers still use the broker.
    pub async fn delete(&self, id: &str) -> Result<(), AdminError> {
        Self::registered(id)?;
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

    /// The built-in broker first, then the registered ones.
    pub async fn list(&self) -> Result<Vec<BrokerView>, AdminError> {
        let builtin = Self::describe(builtin::BROKER_ID, &Broker::builtin());
        Ok(builtin
            .into_iter()
            .chain(
                self.store
                    .load_all::<Broker>()
                    .await?
                    .into_iter()
                    .filter_map(|(id, broker, _)| Self::describe(&id, &broker)),
            )
            .collect())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn describe(id: &str, broker: &Broker) -> Option<BrokerView> {
        let spec = broker.spec()?.redacted();
        Some(BrokerView {
            id: id.to_string(),
            name: spec.name.clone(),
            kind: spec.kind(),
            capabilities: spec.kind().capabilities(),
            connection: spec.connection,
            online: broker.is_online(),
            deleted: broker.is_deleted(),
            health: None,
            inside: Default::default(),
            figures: None,
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
        let known = self.sources_of_consumers(id).await?;
        let looked = tokio::time::timeout(
            LOOK_TIMEOUT,
            crate::sources::look(&self.store, &spec.connection, &known),
        )
        .await
        .map(|looked| {
            looked.map(|mut inspection| {
                view.inside = std::mem::take(&mut inspection.sections);
                view.figures = Some(inspection);
            })
        });
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

    async fn sources_of_consumers(&self, broker_id: &str) -> Result<Vec<Source>, AdminError> {
        Ok(self
            .store
            .load_all::<Consumer>()
            .await?
            .into_iter()
            .filter_map(|(_, c, _)| match c.spec() {
                Some(spec) if spec.broker_id == broker_id && !c.is_deleted() => Some(spec.source.clone()),
                _ => None,
            })
            .collect())
    }
}
