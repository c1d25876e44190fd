//! What a node knows of gRPC messages: the descriptor sets uploaded to the
//! cluster (kept in the event store, one aggregate per set, read again by
//! every node when a lookup misses or its copy is old), and what servers'
//! reflection said (per node, in memory).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bida_domain::descriptors::{
    descriptor_set_id, DescriptorSet, DescriptorSetCommand, DescriptorSetError, DescriptorSetEvent,
};
use bida_domain::grpc::GrpcMethod;
use bida_domain::ValidationErrors;
use bida_store::Store;
use chrono::{DateTime, Utc};
use prost::Message as _;
use prost_reflect::DescriptorPool;
use prost_types::FileDescriptorSet;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::grpc::{add_files, find, MethodTypes};
use crate::brokers::{admin_error, AdminError};
use crate::commands::Commands;

/// A lookup that misses reads the uploaded sets again at most this often.
const RELOAD_ON_MISS_AFTER: Duration = Duration::from_secs(2);
/// What a node read of the uploaded sets is read again after this (a set
/// deleted on another node stops being used by then).
const RELOAD_AFTER: Duration = Duration::from_secs(60);
/// The largest set accepted.
pub const MAX_SET_BYTES: usize = 4 * 1024 * 1024;

/// An uploaded set as the API shows it.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DescriptorSetView {
    /// The hex SHA-256 of the set's bytes.
    pub id: String,
    /// The services it describes (`orders.v1.Callbacks`).
    pub services: Vec<String>,
    /// Its files (`orders.proto`, ...).
    pub files: Vec<String>,
    pub uploaded_at: Option<DateTime<Utc>>,
    pub bytes: usize,
}

struct Uploaded {
    pool: DescriptorPool,
    read_at: Option<Instant>,
}

#[derive(Clone)]
struct Reflected {
    pool: DescriptorPool,
    at: Instant,
}

/// Shared by the delivery threads and the API of one node.
#[derive(Clone)]
pub struct Descriptors {
    store: Option<Store>,
    commands: Option<Commands<DescriptorSet>>,
    uploaded: Arc<RwLock<Uploaded>>,
    /// One reader of the store at a time.
    reading: Arc<tokio::sync::Mutex<()>>,
    reflected: Arc<Mutex<HashMap<String, Reflected>>>,
}

impl Default for Descriptors {
    /// Knows only what reflection says (no store: unit tests).
    fn default() -> Self {
        Self {
            store: None,
            commands: None,
            uploaded: Arc::new(RwLock::new(Uploaded {
                pool: DescriptorPool::global(),
                read_at: None,
            })),
            reading: Arc::default(),
            reflected: Arc::default(),
        }
    }
}

impl Descriptors {
    pub fn new(store: Store) -> Self {
        Self {
            commands: Some(Commands::new(&store)),
            store: Some(store),
            ..Self::default()
        }
    }

    /// The method's types if this node knows them without asking anyone:
    /// uploaded, or described by the server's reflection before.
    pub fn known(&self, target: &str, method: &GrpcMethod) -> Option<MethodTypes> {
        find(&self.uploaded.read().unwrap_or_else(|p| p.into_inner()).pool, method).or_else(|| {
            self.reflected(target)
                .and_then(|reflected| find(&reflected.pool, method))
        })
    }

    /// The method's types from the uploaded sets, read again from the store
    /// when this node's copy is old, or lacks the method and `reread_on_miss`.
    pub(super) async fn uploaded(&self, method: &GrpcMethod, reread_on_miss: bool) -> Option<MethodTypes> {
        let (found, read_at) = {
            let uploaded = self.uploaded.read().unwrap_or_else(|p| p.into_inner());
            (find(&uploaded.pool, method), uploaded.read_at)
        };
        let age = read_at.map_or(Duration::MAX, |at| at.elapsed());
        let stale = age > RELOAD_AFTER || (reread_on_miss && found.is_none() && age > RELOAD_ON_MISS_AFTER);
        if !stale || self.store.is_none() {
            return found;
        }
        // Attempts that find it stale together read the store once.
        let reading = self.reading.lock().await;
        if self.uploaded.read().unwrap_or_else(|p| p.into_inner()).read_at == read_at {
            if let Err(e) = self.read_store().await {
                tracing::warn!(error = %e, "cannot read the uploaded descriptor sets");
            }
        }
        drop(reading);
        find(&self.uploaded.read().unwrap_or_else(|p| p.into_inner()).pool, method)
    }

    pub(super) fn reflected_pool(&self, target: &str) -> Option<(DescriptorPool, Duration)> {
        self.reflected(target).map(|r| (r.pool, r.at.elapsed()))
    }

    fn reflected(&self, target: &str) -> Option<Reflected> {
        self.reflected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(target)
            .cloned()
    }

    pub(super) fn remember(&self, target: &str, pool: DescriptorPool) {
        let mut reflected = self.reflected.lock().unwrap_or_else(|p| p.into_inner());
        reflected.insert(
            target.to_string(),
            Reflected {
                pool,
                at: Instant::now(),
            },
        );
    }

    /// Every set on record, oldest first, with its bytes.
    async fn sets(&self) -> Result<Vec<(DescriptorSetView, Vec<u8>)>, AdminError> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        let mut sets: BTreeMap<String, DescriptorSet> = BTreeMap::new();
        for event in store.events_of_type("descriptor_set").await? {
            let Some(payload) = &event.payload else { continue };
            let event_of: DescriptorSetEvent = serde_json::from_str(payload)
                .map_err(|e| AdminError::Internal(format!("descriptor set {}: {e}", event.aggregate_id)))?;
            sets.entry(event.aggregate_id).or_default().apply_event(&event_of);
        }
        let mut live: Vec<(DescriptorSetView, Vec<u8>)> = sets
            .into_iter()
            .filter_map(|(id, set)| {
                let bytes = BASE64.decode(set.set()?).ok()?;
                let view = DescriptorSetView {
                    id,
                    services: set.services().to_vec(),
                    files: set.files().to_vec(),
                    uploaded_at: set.uploaded_at(),
                    bytes: bytes.len(),
                };
                Some((view, bytes))
            })
            .collect();
        live.sort_by_key(|(view, _)| view.uploaded_at);
        Ok(live)
    }

    /// Reads the uploaded sets again into a pool of their own.
    async fn reload(&self) -> Result<(), AdminError> {
        let _one = self.reading.lock().await;
        self.read_store().await
    }

    async fn read_store(&self) -> Result<(), AdminError> {
        let mut pool = DescriptorPool::global();
        for (view, bytes) in self.sets().await? {
            if let Err(why) = add_set(&mut pool, &bytes) {
                tracing::warn!(set = %view.id, %why, "an uploaded descriptor set no longer fits the others; skipped");
            }
        }
        *self.uploaded.write().unwrap_or_else(|p| p.into_inner()) = Uploaded {
            pool,
            read_at: Some(Instant::now()),
        };
        Ok(())
    }

    /// Records a `FileDescriptorSet` for the whole cluster once it is known
    /// to describe something with what is uploaded already; uploading the
    /// same bytes again answers the set on record (`false`: not new).
    pub async fn upload(&self, bytes: &[u8]) -> Result<(DescriptorSetView, bool), AdminError> {
        let invalid = |why: String| AdminError::Invalid(ValidationErrors::single("body", why));
        if bytes.len() > MAX_SET_BYTES {
            return Err(invalid(format!("is larger than {MAX_SET_BYTES} bytes")));
        }
        self.reload().await?;
        let id = descriptor_set_id(bytes);
        let mut pool = self.uploaded.read().unwrap_or_else(|p| p.into_inner()).pool.clone();
        let existing = self.sets().await?.into_iter().find(|(view, _)| view.id == id);
        if let Some((view, _)) = existing {
            return Ok((view, false));
        }
        let (services, files) = add_set(&mut pool, bytes).map_err(invalid)?;
        if services.is_empty() {
            return Err(invalid("describes no service".into()));
        }
        let commands = self
            .commands
            .as_ref()
            .ok_or_else(|| AdminError::Internal("no store".into()))?;
        let command = DescriptorSetCommand::Upload {
            set: BASE64.encode(bytes),
            services,
            files,
            at: Utc::now(),
        };
        commands
            .execute(&id, command)
            .await
            .map_err(|e| admin_error(e, |e| matches!(e, DescriptorSetError::NotFound)))?;
        self.reload().await?;
        let view = self.view(&id).await?;
        Ok((view, true))
    }

    pub async fn list(&self) -> Result<Vec<DescriptorSetView>, AdminError> {
        Ok(self.sets().await?.into_iter().map(|(view, _)| view).collect())
    }

    pub async fn view(&self, id: &str) -> Result<DescriptorSetView, AdminError> {
        self.sets()
            .await?
            .into_iter()
            .map(|(view, _)| view)
            .find(|view| view.id == id)
            .ok_or_else(|| AdminError::NotFound(format!("no descriptor set {id}")))
    }

    /// Deliveries that need it fall back to reflection (on every node within
    /// a minute).
    pub async fn delete(&self, id: &str) -> Result<(), AdminError> {
        let commands = self
            .commands
            .as_ref()
            .ok_or_else(|| AdminError::Internal("no store".into()))?;
        commands
            .execute(id, DescriptorSetCommand::Delete { at: Utc::now() })
            .await
            .map_err(|e| admin_error(e, |e| matches!(e, DescriptorSetError::NotFound)))?;
        self.reload().await
    }

    /// Adds a set to this node's pool only (unit tests).
    #[cfg(test)]
    pub(super) fn add(&self, set: &[u8]) -> Result<Vec<String>, String> {
        let mut uploaded = self.uploaded.write().unwrap_or_else(|p| p.into_inner());
        Ok(add_set(&mut uploaded.pool, set)?.0)
    }
}

/// Adds an encoded set to a pool: the services and files it brings.
fn add_set(pool: &mut DescriptorPool, bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    let set = FileDescriptorSet::decode(bytes).map_err(|e| format!("is not a FileDescriptorSet: {e}"))?;
    let files: Vec<String> = set.file.iter().map(|f| f.name().to_string()).collect();
    if files.is_empty() {
        return Err("holds no file".into());
    }
    let services = add_files(pool, set.file)?;
    Ok((services, files))
}
