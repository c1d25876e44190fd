//! Nodes' consumer reports stay current while their node confirms them,
//! on each store: a publish writes only the rows that changed; and a set of
//! consumers' totals and rates is read at once.

use bida_domain::stats::{Counts, Dimension};
use bida_store::{ConsumerCounterChange, FeedPosition, StatsBucket, Store, StoreConfig, StoreLocation};
use bida_testkit::TestDatabase;
use chrono::DurationRound;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

async fn scenario(store: &Store) {
    let node = Uuid::new_v4();
    store.register_node(node, "n1", "test", "127.0.0.1:0").await.unwrap();
    let row = |id: &str, fetched: u64| (id.to_string(), "running".to_string(), json!({"fetched": fetched}));
    let shown = |rows: Vec<bida_store::RuntimeRow>| rows.into_iter().map(|r| r.report).collect::<Vec<_>>();

    store
        .publish_consumer_runtime(node, &["a", "b"], &[row("a", 1), row("b", 2)])
        .await
        .unwrap();
    assert_eq!(
        shown(store.consumer_runtime(Some(&["a"]), 10.0).await.unwrap()),
        [json!({"fetched": 1})]
    );
    assert_eq!(store.consumer_actors_on(node, 10.0).await.unwrap(), 2);
    let every: Vec<String> = store
        .consumer_runtime(None, 10.0)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.consumer_id)
        .collect();
    assert_eq!(every, ["a", "b"]);

    // A second later the rows are older than a second: stale without a publish...
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(store.consumer_runtime(Some(&["a"]), 1.0).await.unwrap().is_empty());
    assert_eq!(store.consumer_actors_on(node, 1.0).await.unwrap(), 0);

    // ...current again after one that changed nothing, as of that publish.
    let confirmed = chrono::Utc::now();
    store.publish_consumer_runtime(node, &["a", "b"], &[]).await.unwrap();
    let rows = store.consumer_runtime(Some(&["a"]), 1.0).await.unwrap();
    assert_eq!(shown(rows.clone()), [json!({"fetched": 1})]);
    assert!(
        rows[0].updated_at >= confirmed - chrono::Duration::milliseconds(5),
        "{rows:?}"
    );
    assert_eq!(store.consumer_actors_on(node, 1.0).await.unwrap(), 2);

    // A changed row is written; a consumer no longer running goes.
    store
        .publish_consumer_runtime(node, &["b"], &[row("b", 7)])
        .await
        .unwrap();
    assert!(store.consumer_runtime(Some(&["a"]), 10.0).await.unwrap().is_empty());
    assert_eq!(
        shown(store.consumer_runtime(Some(&["b"]), 10.0).await.unwrap()),
        [json!({"fetched": 7})]
    );

    // Stopping publishes nothing running.
    store.publish_consumer_runtime(node, &[], &[]).await.unwrap();
    assert_eq!(store.consumer_actors_on(node, 10.0).await.unwrap(), 0);
}

/// A set of consumers' totals and rates is read at once, each its own.
async fn totals_and_rates(store: &Store) {
    let mut fold = store.begin_rebuild("consumer-reports-test").await.unwrap();
    let delivered = |n: i64| ConsumerCounterChange {
        consumed: n,
        delivered: n,
        ..Default::default()
    };
    fold.add_consumer_counters(vec![("a".into(), delivered(3)), ("b".into(), delivered(5))])
        .await
        .unwrap();
    let minute = chrono::Utc::now()
        .duration_trunc(chrono::TimeDelta::minutes(1))
        .unwrap();
    let bucket = |key: &str, n: i64| StatsBucket {
        minute,
        dimension: Dimension::Consumer,
        key: key.into(),
        counts: Counts {
            submitted: n,
            delivered: n,
            ..Default::default()
        },
    };
    fold.add_stats(vec![bucket("a", 30), bucket("b", 60)]).await.unwrap();
    fold.commit(FeedPosition::default()).await.unwrap();

    let counters = store.consumer_counters(&["a", "b", "none"]).await.unwrap();
    assert_eq!(counters.len(), 2, "{counters:?}");
    assert_eq!(counters["a"][1], 3);
    assert_eq!(counters["b"][1], 5);
    assert_eq!(store.consumer_counters(&["b"]).await.unwrap().len(), 1);
    let rates = store.consumer_rates(&["a", "b", "none"]).await.unwrap();
    assert_eq!(rates.len(), 2, "{rates:?}");
    let (a, b) = (rates["a"], rates["b"]);
    assert!(a.0 > 0.0 && (b.0 / a.0 - 2.0).abs() < 1e-9, "{rates:?}");
    assert!((b.1 / a.1 - 2.0).abs() < 1e-9, "{rates:?}");
    assert!(store.consumer_rates(&[]).await.unwrap().is_empty());
}

/// An embedded store in a directory of its own, removed when dropped.
struct Embedded {
    store: Option<Store>,
    dir: std::path::PathBuf,
}

impl Embedded {
    async fn open() -> Self {
        let dir = std::env::temp_dir().join(format!("bida-reports-{}", Uuid::new_v4().simple()));
        let store = Store::open_at(&StoreLocation::Embedded(dir.clone()), &StoreConfig::default())
            .await
            .unwrap();
        Self {
            store: Some(store),
            dir,
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("open until dropped")
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        // Closed before its files go.
        drop(self.store.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn postgres() -> (TestDatabase, Store) {
    let db = TestDatabase::create().await;
    let store = Store::open(db.url(), &StoreConfig::default()).await.unwrap();
    (db, store)
}

#[tokio::test]
async fn postgres_reads_a_set_of_consumers_totals_and_rates() {
    totals_and_rates(&postgres().await.1).await;
}

#[tokio::test]
async fn embedded_reads_a_set_of_consumers_totals_and_rates() {
    totals_and_rates(Embedded::open().await.store()).await;
}

#[tokio::test]
async fn postgres_reports_stay_current_while_their_node_confirms_them() {
    scenario(&postgres().await.1).await;
}

#[tokio::test]
async fn embedded_reports_stay_current_while_their_node_confirms_them() {
    scenario(Embedded::open().await.store()).await;
}
