//! Nodes' consumer reports stay current while their node confirms them,
//! on each store: a publish writes only the rows that changed.

use bida_store::{Store, StoreConfig, StoreLocation};
use bida_testkit::TestDatabase;
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
        shown(store.consumer_runtime(Some("a"), 10.0).await.unwrap()),
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
    assert!(store.consumer_runtime(Some("a"), 1.0).await.unwrap().is_empty());
    assert_eq!(store.consumer_actors_on(node, 1.0).await.unwrap(), 0);

    // ...current again after one that changed nothing, as of that publish.
    let confirmed = chrono::Utc::now();
    store.publish_consumer_runtime(node, &["a", "b"], &[]).await.unwrap();
    let rows = store.consumer_runtime(Some("a"), 1.0).await.unwrap();
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
    assert!(store.consumer_runtime(Some("a"), 10.0).await.unwrap().is_empty());
    assert_eq!(
        shown(store.consumer_runtime(Some("b"), 10.0).await.unwrap()),
        [json!({"fetched": 7})]
    );

    // Stopping publishes nothing running.
    store.publish_consumer_runtime(node, &[], &[]).await.unwrap();
    assert_eq!(store.consumer_actors_on(node, 10.0).await.unwrap(), 0);
}

#[tokio::test]
async fn postgres_reports_stay_current_while_their_node_confirms_them() {
    let db = TestDatabase::create().await;
    scenario(&Store::open(db.url(), &StoreConfig::default()).await.unwrap()).await;
}

#[tokio::test]
async fn embedded_reports_stay_current_while_their_node_confirms_them() {
    let dir = std::env::temp_dir().join(format!("bida-reports-{}", Uuid::new_v4().simple()));
    let store = Store::open_at(&StoreLocation::Embedded(dir.clone()), &StoreConfig::default())
        .await
        .unwrap();
    scenario(&store).await;
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}
