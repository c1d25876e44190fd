use bida_store::{Fold, Store, StoreError, StoredEvent};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("projection {0} was moved on by another runner")]
    Overtaken(&'static str),
}

/// A read model folded from events.
pub trait Projection: Send + Sync + 'static {
    /// Also the checkpoint's name.
    const NAME: &'static str;

    /// What a fold does once its page is committed (telemetry, say), so that
    /// a page folded again after a failed commit is not counted twice.
    type Committed: Send;

    /// Folds a page of events (in feed order) into the read model.
    fn apply(
        &self,
        fold: &mut Fold,
        events: &[StoredEvent],
    ) -> impl Future<Output = Result<Self::Committed, ProjectionError>> + Send;

    /// Called with what `apply` returned, after its page committed.
    fn committed(&self, _effects: Self::Committed) {}

    /// A JSON path of event payloads this projection never reads, dropped
    /// before the payload leaves the database.
    const WITHOUT: &'static [&'static str] = &[];

    /// Empties the read model, for a rebuild.
    fn reset(&self, fold: &mut Fold) -> impl Future<Output = Result<(), ProjectionError>> + Send;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunnerConfig {
    /// Events folded per transaction.
    pub page: i64,
    /// Sleep when caught up.
    pub idle_ms: u64,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            page: 1_000,
            idle_ms: 100,
        }
    }
}

/// Folds one page after the checkpoint; returns how many events it folded.
async fn fold_page<P: Projection>(store: &Store, projection: &P, page: i64) -> Result<usize, ProjectionError> {
    let at = store.checkpoint(P::NAME).await?;
    let read = bida_store::FeedRead {
        payload_types: None,
        without: P::WITHOUT,
    };
    let events = store.read_feed(at, page, read).await?;
    let Some(last) = events.last().map(StoredEvent::feed_position) else {
        return Ok(0);
    };
    // Serialises runners: a page is folded only from the checkpoint it was read at.
    let Some(mut fold) = store.begin_fold(P::NAME, at).await? else {
        return Err(ProjectionError::Overtaken(P::NAME));
    };
    let effects = projection.apply(&mut fold, &events).await?;
    fold.commit(last).await?;
    projection.committed(effects);
    Ok(events.len())
}

/// Folds until the projection has read everything readable now; returns the
/// events folded. Committed events a running transaction elsewhere in the
/// cluster holds back are left for later ([`lag`] counts them).
pub async fn catch_up<P: Projection>(
    store: &Store,
    projection: &P,
    config: &RunnerConfig,
) -> Result<usize, ProjectionError> {
    let mut folded = 0;
    loop {
        match fold_page(store, projection, config.page).await {
            Ok(0) => return Ok(folded),
            Ok(n) => folded += n,
            // A running node folded that page meanwhile (a rebuild while
            // nodes run): each page is still folded once; go on from there.
            Err(ProjectionError::Overtaken(_)) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Empties the read model and folds the whole stream again from position 0.
pub async fn rebuild<P: Projection>(
    store: &Store,
    projection: &P,
    config: &RunnerConfig,
) -> Result<usize, ProjectionError> {
    let mut fold = store.begin_rebuild(P::NAME).await?;
    projection.reset(&mut fold).await?;
    fold.commit(bida_store::FeedPosition::default()).await?;
    catch_up(store, projection, config).await
}

/// How many committed events the projection has not folded yet (those a
/// transaction elsewhere in the cluster holds back included).
pub async fn lag(store: &Store, name: &str) -> Result<i64, ProjectionError> {
    Ok(store.unread_events(name).await?)
}

/// Keeps the projection up to date for as long as the process runs; only the
/// node holding the projection's leadership folds.
pub fn run<P: Projection>(store: Store, projection: P, config: RunnerConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let idle = Duration::from_millis(config.idle_ms.max(1));
        let mut singleton = store.singleton(P::NAME);
        let mut was_leading = false;
        loop {
            match singleton.lead().await {
                Ok(true) => {
                    if !was_leading {
                        tracing::info!(projection = P::NAME, "this node runs the projection");
                        was_leading = true;
                    }
                    match fold_page(&store, &projection, config.page).await {
                        Ok(0) => tokio::time::sleep(idle).await,
                        Ok(_) => {}
                        Err(ProjectionError::Overtaken(_)) => {
                            tracing::debug!(projection = P::NAME, "page folded by another runner (a rebuild?)");
                        }
                        Err(e) => {
                            tracing::warn!(projection = P::NAME, error = %e, "projection step failed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                Ok(false) => {
                    was_leading = false;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => {
                    was_leading = false;
                    tracing::warn!(projection = P::NAME, error = %e, "cannot reach the store");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    })
}
