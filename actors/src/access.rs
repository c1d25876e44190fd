//! Apps and API keys for the API: create, change, revoke, and turn a key
//! presented by a request into a [`Caller`].
//!
//! Keys are checked from memory after their first use on a node. Every change
//! to a key or an app is announced through Postgres (`LISTEN/NOTIFY`), and
//! each node drops what it remembered when it hears one (or when its
//! listening connection is lost, since it may have missed one), so a
//! revocation takes effect on every node at once.

use base64::Engine;
use bida_domain::access::{
    ApiKey, App, AppCommand, AppError, AppSpec, Caller, KeyCommand, KeyError, KeyHash, KeyIssue, Role, KEY_PREFIX,
};
use bida_store::{Channel, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::brokers::{admin_error, AdminError};
use crate::commands::Commands;
use crate::secrets::{new_signing_secret, Sealer};

/// Shortest key accepted as `auth.bootstrap_admin_key`.
pub const MIN_CONFIGURED_KEY: usize = 24;
/// Characters of a key shown after it was issued.
const SHOWN_PREFIX: usize = 12;
/// The id of the admin key made on the first start of an installation.
const BOOTSTRAP_KEY_ID: &str = "bootstrap-admin";
/// How often each node records when its keys were last used.
const USAGE_FLUSH: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A key (at least 24 characters) that is an admin key of this
    /// installation, for automation and tests. Without it, the first start
    /// makes an admin key and prints it once.
    pub bootstrap_admin_key: Option<String>,
    /// Whether `/metrics` needs a key (viewer or above).
    pub protect_metrics: bool,
    /// Whether `/openapi.json` needs a key (any role).
    pub protect_openapi: bool,
    /// Longest a node trusts a key it checked without hearing of changes
    /// (a safety net: changes are announced at once).
    pub cache_ttl_ms: u64,
    /// How long a rotated signing secret keeps signing beside the new one.
    pub signing_overlap_hours: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            bootstrap_admin_key: None,
            protect_metrics: false,
            protect_openapi: false,
            cache_ttl_ms: 60_000,
            signing_overlap_hours: 24,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppView {
    pub id: String,
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub allowed_networks: Vec<ipnet::IpNet>,
    /// Secrets signing its deliveries now (two during a rotation's overlap).
    pub signing_secrets: usize,
}

/// A new app, with its signing secret: the only time it is shown.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedApp {
    #[serde(flatten)]
    pub app: AppView,
    /// `whsec_…`: endpoints verify deliveries with it (Standard Webhooks).
    /// Absent when the installation has no `secret_key` to keep it with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RotateRequest {
    /// Hours the current secret keeps signing beside the new one (0 to 720);
    /// `auth.signing_overlap_hours` by default.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 720))]
    pub overlap_hours: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RotatedSecret {
    /// The new secret: the only time it is shown.
    pub signing_secret: String,
    /// Until when the previous secret also signs.
    pub previous_valid_until: DateTime<Utc>,
}

/// A change of an app; absent fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppPatch {
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 100,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<bida_domain::access::Cidr>>, max_items = 100))]
    pub allowed_networks: Option<Vec<ipnet::IpNet>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyRequest {
    /// What the key is for: 1 to 100 characters, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 100,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: String,
    pub role: Role,
    /// Limits the key to publishing on these built-in topics (1 to 100): it
    /// writes to no broker and no other topic.
    #[cfg_attr(feature = "openapi", schema(max_items = 100, min_items = 1))]
    #[serde(default)]
    pub topics: Option<Vec<bida_domain::topic::TopicName>>,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The key's first characters.
    pub prefix: String,
    /// The built-in topics alone it publishes on, if it is so limited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<bida_domain::topic::TopicName>>,
    pub created_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new key: the only time the key itself is shown.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedKey {
    #[serde(flatten)]
    pub view: KeyView,
    /// Send as `Authorization: Bearer <key>`. Shown once: Bida keeps only its hash.
    pub key: String,
}

/// Why a key was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the key is not valid (unknown, revoked, or its app was deleted)")]
    UnknownKey,
    #[error("the key cannot be checked now: {0}")]
    Unavailable(String),
}

struct Remembered {
    caller: Caller,
    checked: Instant,
}

#[derive(Default)]
struct Memory {
    callers: HashMap<KeyHash, Remembered>,
    used: HashMap<String, DateTime<Utc>>,
    /// Counts the times everything was forgotten: a key looked up before a
    /// change and remembered after it would outlive its revocation.
    forgotten: u64,
}

#[derive(Clone)]
pub struct AccessService {
    store: Store,
    apps: Commands<App>,
    keys: Commands<ApiKey>,
    memory: Arc<Mutex<Memory>>,
    ttl: Duration,
    sealer: Option<Sealer>,
    overlap_hours: u64,
}

/// A new key: `bida_` and 256 random bits, base64url.
fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn app_error(e: cqrs_es::AggregateError<AppError>) -> AdminError {
    // A deleted app is gone for the API, as it is for the list.
    admin_error(e, |e| matches!(e, AppError::NotFound | AppError::Deleted))
}

fn key_error(e: cqrs_es::AggregateError<KeyError>) -> AdminError {
    admin_error(e, |e| matches!(e, KeyError::NotFound))
}

impl AccessService {
    pub fn new(store: Store, config: &AuthConfig, sealer: Option<Sealer>) -> Self {
        Self {
            apps: Commands::new(&store),
            keys: Commands::new(&store),
            store,
            memory: Arc::default(),
            ttl: Duration::from_millis(config.cache_ttl_ms),
            sealer,
            overlap_hours: config.signing_overlap_hours,
        }
    }

    /// Forgets remembered keys whenever any node announces a change, and
    /// records key usage; runs until aborted.
    pub fn spawn_watch(&self) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut flush = tokio::time::interval(USAGE_FLUSH);
            loop {
                let mut listener = match service.store.listen(Channel::Access).await {
                    Ok(listener) => listener,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for key changes; retrying");
                        service.forget();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                // Changes made before the listener was up were not heard.
                service.forget();
                loop {
                    tokio::select! {
                        heard = listener.next() => match heard {
                            Some(_) => service.forget(),
                            None => {
                                tracing::warn!("lost the key-change listener; reconnecting");
                                service.forget();
                                break;
                            }
                        },
                        _ = flush.tick() => service.flush_usage().await,
                    }
                }
            }
        })
    }

    fn forget(&self) {
        if let Ok(mut memory) = self.memory.lock() {
            memory.callers.clear();
            memory.forgotten += 1;
        }
    }

    async fn flush_usage(&self) {
        let used: Vec<(String, DateTime<Utc>)> = match self.memory.lock() {
            Ok(mut memory) => memory.used.drain().collect(),
            Err(_) => return,
        };
        if !used.is_empty() {
            if let Err(e) = self.store.touch_keys(&used).await {
                tracing::warn!(error = %e, "cannot record when keys were last used");
            }
        }
    }

    /// The caller a presented key names.
    pub async fn authenticate(&self, presented: &str) -> Result<Caller, Refusal> {
        let hash = KeyHash::of(presented);
        let now = Instant::now();
        let mut generation = 0;
        if let Ok(mut memory) = self.memory.lock() {
            generation = memory.forgotten;
            let fresh = memory
                .callers
                .get(&hash)
                .filter(|r| now.duration_since(r.checked) < self.ttl)
                .map(|r| r.caller.clone());
            if let Some(caller) = fresh {
                memory.used.insert(caller.key_id.clone(), Utc::now());
                return Ok(caller);
            }
        }
        let caller = self.look_up(&hash).await?.ok_or(Refusal::UnknownKey)?;
        if let Ok(mut memory) = self.memory.lock() {
            memory.used.insert(caller.key_id.clone(), Utc::now());
            if memory.forgotten != generation {
                // Something changed while the key was read: answer from what
                // was read, remember nothing.
                return Ok(caller);
            }
            memory.callers.insert(
                hash,
                Remembered {
                    caller: caller.clone(),
                    checked: now,
                },
            );
        }
        Ok(caller)
    }

    async fn look_up(&self, hash: &KeyHash) -> Result<Option<Caller>, Refusal> {
        let unavailable = |e: StoreError| Refusal::Unavailable(e.to_string());
        let Some(key_id) = self.store.key_id_by_hash(hash.as_str()).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let Some((key, _)) = self
            .store
            .load_aggregate::<ApiKey>(&key_id)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let Some(issue) = key.valid() else { return Ok(None) };
        let networks = match &issue.app_id {
            None => Vec::new(),
            Some(app_id) => match self.store.load_aggregate::<App>(app_id).await.map_err(unavailable)? {
                Some((app, _)) => match app.live() {
                    Some(spec) => spec.allowed_networks.clone(),
                    None => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        Ok(Some(Caller {
            key_id,
            app_id: issue.app_id.clone(),
            role: issue.role,
            networks,
            topics: issue
                .topics
                .as_ref()
                .map(|topics| topics.iter().map(ToString::to_string).collect()),
        }))
    }

    /// Forgets here at once, and tells the other nodes.
    async fn announce(&self) {
        self.forget();
        // The change is recorded; if the announcement is lost, nodes still
        // drop what they remembered within `cache_ttl_ms`.
        if let Err(e) = self.store.announce(Channel::Access).await {
            tracing::warn!(error = %e, "cannot announce a key or app change");
        }
    }

    /// Makes sure the installation has an admin key: the configured one, or
    /// on a first start, a new one printed once to the log.
    pub async fn bootstrap(&self, config: &AuthConfig) -> Result<(), AdminError> {
        if let Some(key) = &config.bootstrap_admin_key {
            if key.chars().count() < MIN_CONFIGURED_KEY {
                return Err(AdminError::Invalid(bida_domain::ValidationErrors::single(
                    "auth.bootstrap_admin_key",
                    format!("must be at least {MIN_CONFIGURED_KEY} characters"),
                )));
            }
            let hash = KeyHash::of(key);
            if self.store.key_id_by_hash(hash.as_str()).await?.is_none() {
                let id = format!("configured-{}", &hash.as_str()[..16]);
                self.issue_as(&id, "auth.bootstrap_admin_key", Role::Admin, None, key, None)
                    .await?;
            }
            return Ok(());
        }
        if self.store.has_keys().await? {
            return Ok(());
        }
        let secret = new_secret();
        match self
            .issue_as(BOOTSTRAP_KEY_ID, "bootstrap", Role::Admin, None, &secret, None)
            .await
        {
            Ok(_) => {
                tracing::warn!(
                    "created the first admin key; it is shown only now, keep it: {secret} \
                     (send it as `Authorization: Bearer <key>`; create others with POST /v1/apps/{{id}}/keys \
                     or `bida keys create`)"
                );
                Ok(())
            }
            // Another node made it first.
            Err(AdminError::Rejected(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn issue_as(
        &self,
        id: &str,
        name: &str,
        role: Role,
        app_id: Option<String>,
        secret: &str,
        topics: Option<Vec<bida_domain::topic::TopicName>>,
    ) -> Result<KeyView, AdminError> {
        let issue = KeyIssue {
            name: name.trim().to_string(),
            role,
            app_id,
            topics,
            prefix: secret.chars().take(SHOWN_PREFIX).collect(),
            hash: KeyHash::of(secret),
        };
        issue.validate().map_err(AdminError::Invalid)?;
        self.keys
            .execute(id, KeyCommand::Issue { issue, at: Utc::now() })
            .await
            .map_err(key_error)?;
        self.key(id).await
    }

    /// A new key; `app_id` `None` makes an installation-wide key.
    pub async fn issue(&self, app_id: Option<&str>, request: KeyRequest) -> Result<IssuedKey, AdminError> {
        if let Some(app_id) = app_id {
            self.app(app_id).await?;
        }
        let secret = new_secret();
        let id = Uuid::now_v7().to_string();
        let view = self
            .issue_as(
                &id,
                &request.name,
                request.role,
                app_id.map(str::to_string),
                &secret,
                request.topics,
            )
            .await?;
        Ok(IssuedKey { view, key: secret })
    }

    /// Revokes a key (of `app_id`, when given) on every node.
    pub async fn revoke(&self, app_id: Option<&str>, key_id: &str) -> Result<(), AdminError> {
        let key = self.key(key_id).await?;
        if app_id.is_some() && key.app_id.as_deref() != app_id {
            return Err(AdminError::NotFound(format!("the app has no key {key_id}")));
        }
        self.keys
            .execute(key_id, KeyCommand::Revoke { at: Utc::now() })
            .await
            .map_err(key_error)?;
        self.announce().await;
        Ok(())
    }

    pub async fn key(&self, key_id: &str) -> Result<KeyView, AdminError> {
        let usage = self.store.key_usage().await?;
        match self.store.load_aggregate::<ApiKey>(key_id).await? {
            Some((key, _)) => key_view(key_id, &key, &usage),
            None => None,
        }
        .ok_or_else(|| AdminError::NotFound(format!("no key with id {key_id}")))
    }

    /// Keys of an app (`Some`) or of the installation (`None`), revoked ones too.
    pub async fn keys(&self, app_id: Option<&str>) -> Result<Vec<KeyView>, AdminError> {
        if let Some(app_id) = app_id {
            self.app(app_id).await?;
        }
        let usage = self.store.key_usage().await?;
        Ok(self
            .store
            .load_all::<ApiKey>()
            .await?
            .iter()
            .filter_map(|(id, key, _)| key_view(id, key, &usage))
            .filter(|view| view.app_id.as_deref() == app_id)
            .collect())
    }

    pub async fn create_app(&self, spec: AppSpec) -> Result<CreatedApp, AdminError> {
        let spec = AppSpec {
            name: spec.name.trim().to_string(),
            ..spec
        };
        spec.validate().map_err(AdminError::Invalid)?;
        let id = Uuid::now_v7().to_string();
        self.apps
            .execute(&id, AppCommand::Create { spec, at: Utc::now() })
            .await
            .map_err(app_error)?;
        let signing_secret = match &self.sealer {
            Some(sealer) => Some(self.new_secret(&id, sealer, None).await?),
            None => None,
        };
        Ok(CreatedApp {
            app: self.app(&id).await?,
            signing_secret,
        })
    }

    async fn new_secret(
        &self,
        id: &str,
        sealer: &Sealer,
        previous_until: Option<DateTime<Utc>>,
    ) -> Result<String, AdminError> {
        let secret = new_signing_secret();
        let command = AppCommand::RotateSecret {
            sealed_secret: sealer.seal(&secret),
            previous_until,
            at: Utc::now(),
        };
        self.apps.execute(id, command).await.map_err(app_error)?;
        Ok(secret)
    }

    /// A new signing secret; the current one keeps signing beside it for
    /// the overlap, so endpoints can switch without refusing deliveries.
    pub async fn rotate_secret(&self, id: &str, request: RotateRequest) -> Result<RotatedSecret, AdminError> {
        let sealer = self.sealer.as_ref().ok_or_else(|| {
            AdminError::Rejected(
                "this installation has no secret_key (BIDA_SECRET_KEY) to keep signing secrets with; \
                 set one (`openssl rand -base64 32`) and restart"
                    .into(),
            )
        })?;
        let hours = request.overlap_hours.unwrap_or(self.overlap_hours);
        if hours > 720 {
            return Err(AdminError::Invalid(bida_domain::ValidationErrors::single(
                "overlap_hours",
                "must be between 0 and 720",
            )));
        }
        self.app(id).await?;
        let until = Utc::now() + chrono::TimeDelta::hours(hours as i64);
        let signing_secret = self.new_secret(id, sealer, Some(until)).await?;
        Ok(RotatedSecret {
            signing_secret,
            previous_valid_until: until,
        })
    }

    pub async fn app(&self, id: &str) -> Result<AppView, AdminError> {
        match self.store.load_aggregate::<App>(id).await? {
            Some((app, _)) => app_view(id, &app),
            None => None,
        }
        .ok_or_else(|| AdminError::NotFound(format!("no app with id {id}")))
    }

    pub async fn apps(&self) -> Result<Vec<AppView>, AdminError> {
        Ok(self
            .store
            .load_all::<App>()
            .await?
            .iter()
            .filter_map(|(id, app, _)| app_view(id, app))
            .collect())
    }

    pub async fn update_app(&self, id: &str, patch: AppPatch) -> Result<AppView, AdminError> {
        let current = self.app(id).await?;
        let spec = AppSpec {
            name: patch.name.map_or(current.name, |n| n.trim().to_string()),
            allowed_networks: patch.allowed_networks.unwrap_or(current.allowed_networks),
        };
        spec.validate().map_err(AdminError::Invalid)?;
        self.apps
            .execute(id, AppCommand::Update { spec, at: Utc::now() })
            .await
            .map_err(app_error)?;
        self.announce().await;
        self.app(id).await
    }

    /// Deletes an app: its keys stop working on every node at once.
    pub async fn delete_app(&self, id: &str) -> Result<(), AdminError> {
        self.apps
            .execute(id, AppCommand::Delete { at: Utc::now() })
            .await
            .map_err(app_error)?;
        self.announce().await;
        Ok(())
    }
}

fn app_view(id: &str, app: &App) -> Option<AppView> {
    let spec = app.live()?;
    Some(AppView {
        id: id.to_string(),
        name: spec.name.clone(),
        allowed_networks: spec.allowed_networks.clone(),
        signing_secrets: app.signing_secrets(Utc::now()).len(),
    })
}

fn key_view(id: &str, key: &ApiKey, usage: &HashMap<String, DateTime<Utc>>) -> Option<KeyView> {
    let issue = key.issue()?;
    Some(KeyView {
        id: id.to_string(),
        name: issue.name.clone(),
        role: issue.role,
        app_id: issue.app_id.clone(),
        prefix: issue.prefix.clone(),
        topics: issue.topics.clone(),
        created_at: key.issued_at(),
        last_used_at: usage.get(id).copied(),
        revoked_at: key.revoked_at(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keys_are_long_random_and_recognisable() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 43);
    }
}
