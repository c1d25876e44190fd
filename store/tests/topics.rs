//! Built-in topics' logs on both stores: publishing and reading, offsets,
//! subscriptions' positions and claims, retention by slices, search.

use bida_store::topics::{slice_start, ClaimRequest, LogMessage, LogSearch, PartitionBounds, Publish, Published};
use bida_store::{Channel, Store, StoreConfig, StoreError, StoreLocation};
use bida_testkit::TestDatabase;
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use uuid::Uuid;

/// Which store a scenario runs on (for what only one of them promises).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Postgres,
    Embedded,
}

fn publish(topic: &str, partition: i32, key: Option<&str>, body: &[u8]) -> Publish {
    Publish {
        topic: topic.to_string(),
        partition,
        id: Uuid::new_v4(),
        key: key.map(str::to_string),
        headers: BTreeMap::new(),
        content_type: None,
        body: body.to_vec(),
        app: None,
    }
}

fn is_missing<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Missing(_)))
}

fn offsets(messages: &[LogMessage]) -> Vec<i64> {
    messages.iter().map(|m| m.offset).collect()
}

fn bounds(partitions: &[(i32, i64, i64)]) -> Vec<PartitionBounds> {
    partitions
        .iter()
        .map(|&(partition, low, next)| PartitionBounds { partition, low, next })
        .collect()
}

/// What the log should hold for a published message.
fn logged(sent: &Publish, landed: &Published) -> LogMessage {
    LogMessage {
        id: sent.id,
        partition: landed.partition,
        offset: landed.offset,
        key: sent.key.clone(),
        headers: sent.headers.clone(),
        content_type: sent.content_type.clone(),
        body: sent.body.clone(),
        app: sent.app.clone(),
        published_at: landed.published_at,
    }
}

async fn publishes_land_in_order(store: Store, _: Kind) {
    store.shape_log("orders", 3, TimeDelta::hours(1)).await.unwrap();
    let mut wakes = store.listen(Channel::Topics).await.unwrap();
    let before = Utc::now() - TimeDelta::seconds(1);

    let mut first = vec![
        publish("orders", 0, Some("k0"), b"zero"),
        publish("orders", 1, Some("k1"), b"one"),
        publish("orders", 0, None, &[0xff, 0x00, 0xfe, b'a']),
        publish("orders", 2, None, b""),
        publish("orders", 0, Some("k0"), b"{\"n\":3}"),
    ];
    first[0].headers = BTreeMap::from([("x-trace".into(), "abc".into()), ("x-empty".into(), String::new())]);
    first[0].content_type = Some("text/plain".into());
    first[0].app = Some("shop".into());
    first[4].content_type = Some("application/json".into());
    let landed = store.publish(first.clone()).await.unwrap();
    assert_eq!(
        landed.iter().map(|p| (p.id, p.partition, p.offset)).collect::<Vec<_>>(),
        vec![
            (first[0].id, 0, 0),
            (first[1].id, 1, 0),
            (first[2].id, 0, 1),
            (first[3].id, 2, 0),
            (first[4].id, 0, 2)
        ]
    );
    assert!(landed.iter().all(|p| p.published_at == landed[0].published_at));
    let woken = tokio::time::timeout(Duration::from_secs(5), wakes.next())
        .await
        .unwrap();
    assert_eq!(woken.as_deref(), Some("orders"));

    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = vec![
        publish("orders", 2, Some("k2"), b"two"),
        publish("orders", 0, None, b"three"),
    ];
    let landed_second = store.publish(second.clone()).await.unwrap();
    assert_eq!(
        landed_second
            .iter()
            .map(|p| (p.partition, p.offset))
            .collect::<Vec<_>>(),
        [(2, 1), (0, 3)]
    );

    // Read back whole, in offset order, whatever the batch.
    let sent: Vec<(&Publish, &Published)> = first
        .iter()
        .chain(&second)
        .zip(landed.iter().chain(&landed_second))
        .collect();
    for partition in 0..3 {
        let expected: Vec<LogMessage> = sent
            .iter()
            .filter(|(_, landed)| landed.partition == partition)
            .map(|(sent, landed)| logged(sent, landed))
            .collect();
        assert_eq!(store.read_log("orders", partition, 0, 100).await.unwrap(), expected);
    }
    let page = store.read_log("orders", 0, 1, 2).await.unwrap();
    assert_eq!(offsets(&page), [1, 2]);
    assert_eq!(page[0].body, [0xff, 0x00, 0xfe, b'a']);
    assert!(store.read_log("orders", 0, 4, 100).await.unwrap().is_empty());
    assert!(store.read_log("orders", 0, 0, 0).await.unwrap().is_empty());
    assert_eq!(
        store.log_bounds("orders").await.unwrap(),
        bounds(&[(0, 0, 4), (1, 0, 1), (2, 0, 2)])
    );
    assert_eq!(
        store.offsets_at("orders", before).await.unwrap(),
        [(0, 0), (1, 0), (2, 0)]
    );
    assert_eq!(
        store.offsets_at("orders", between).await.unwrap(),
        [(0, 3), (1, 1), (2, 1)]
    );
    assert_eq!(
        store
            .offsets_at("orders", Utc::now() + TimeDelta::hours(5))
            .await
            .unwrap(),
        [(0, 4), (1, 1), (2, 2)]
    );

    // An unknown topic or partition: nothing written at all.
    assert!(is_missing(store.publish(vec![publish("nowhere", 0, None, b"x")]).await));
    assert!(is_missing(
        store
            .publish(vec![publish("orders", 0, None, b"x"), publish("orders", 7, None, b"y")])
            .await
    ));
    assert!(is_missing(
        store
            .publish(vec![
                publish("orders", 1, None, b"x"),
                publish("nowhere", 0, None, b"y")
            ])
            .await
    ));
    assert_eq!(
        store.log_bounds("orders").await.unwrap(),
        bounds(&[(0, 0, 4), (1, 0, 1), (2, 0, 2)])
    );
    assert_eq!(store.read_log("orders", 0, 0, 100).await.unwrap().len(), 4);
    assert!(is_missing(store.read_log("nowhere", 0, 0, 10).await));
    assert!(is_missing(store.log_bounds("nowhere").await));
    assert!(is_missing(store.offsets_at("nowhere", before).await));
    assert!(store.publish(Vec::new()).await.unwrap().is_empty());
}

async fn shaping_grows_partitions_only(store: Store, _: Kind) {
    store.shape_log("grow", 2, TimeDelta::hours(1)).await.unwrap();
    store
        .publish(vec![
            publish("grow", 0, None, b"a"),
            publish("grow", 1, None, b"b"),
            publish("grow", 1, None, b"c"),
        ])
        .await
        .unwrap();
    store.shape_log("grow", 4, TimeDelta::days(3)).await.unwrap();
    assert_eq!(
        store.log_bounds("grow").await.unwrap(),
        bounds(&[(0, 0, 1), (1, 0, 2), (2, 0, 0), (3, 0, 0)])
    );
    // Fewer asked for: the partitions stay.
    store.shape_log("grow", 1, TimeDelta::hours(1)).await.unwrap();
    assert_eq!(store.log_bounds("grow").await.unwrap().len(), 4);
    let landed = store
        .publish(vec![publish("grow", 3, None, b"d"), publish("grow", 1, None, b"e")])
        .await
        .unwrap();
    assert_eq!(
        landed.iter().map(|p| (p.partition, p.offset)).collect::<Vec<_>>(),
        [(3, 0), (1, 2)]
    );
    assert_eq!(offsets(&store.read_log("grow", 1, 0, 10).await.unwrap()), [0, 1, 2]);
}

async fn concurrent_publishes_take_every_offset_once(store: Store, _: Kind) {
    store.shape_log("busy", 2, TimeDelta::hours(1)).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut sent = 0;
                while sent < 50 {
                    // Singles and small batches, some with a message for another partition.
                    let n = 1 + (sent % 4).min(50 - sent - 1);
                    let mut batch: Vec<Publish> = (0..n)
                        .map(|i| publish("busy", 0, None, format!("{task}-{}", sent + i).as_bytes()))
                        .collect();
                    if sent % 3 == 0 {
                        batch.push(publish("busy", 1, None, b"other"));
                    }
                    let landed = store.publish(batch).await.unwrap();
                    mine.extend(landed.iter().filter(|p| p.partition == 0).map(|p| p.offset));
                    sent += n;
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap();
        assert_eq!(mine.len(), 50);
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "one task's publishes land in its order"
        );
        all.extend(mine);
    }
    all.sort_unstable();
    assert_eq!(all, (0..400).collect::<Vec<i64>>());
    let read = store.read_log("busy", 0, 0, 1_000).await.unwrap();
    assert_eq!(offsets(&read), (0..400).collect::<Vec<i64>>());
    let bodies: BTreeSet<&[u8]> = read.iter().map(|m| m.body.as_slice()).collect();
    assert_eq!(bodies.len(), 400);
    assert_eq!(
        store.log_bounds("busy").await.unwrap()[0],
        PartitionBounds {
            partition: 0,
            low: 0,
            next: 400
        }
    );
}

async fn subscription_offsets_move_forward(store: Store, _: Kind) {
    store.shape_log("t", 2, TimeDelta::hours(1)).await.unwrap();
    assert!(store.subscription_offsets("g", "t").await.unwrap().is_empty());
    store.commit_offsets("g", "t", &[(0, 5), (1, 3)]).await.unwrap();
    store.commit_offsets("other", "t", &[(0, 9)]).await.unwrap();
    assert_eq!(
        store.subscription_offsets("g", "t").await.unwrap(),
        HashMap::from([(0, 5), (1, 3)])
    );
    // A late commit does not move back.
    store.commit_offsets("g", "t", &[(0, 2), (1, 7)]).await.unwrap();
    assert_eq!(
        store.subscription_offsets("g", "t").await.unwrap(),
        HashMap::from([(0, 5), (1, 7)])
    );
    store.commit_offsets("g", "t", &[]).await.unwrap();
    // A reset does.
    store.reset_offsets("g", "t", &[(0, 1)]).await.unwrap();
    assert_eq!(
        store.subscription_offsets("g", "t").await.unwrap(),
        HashMap::from([(0, 1), (1, 7)])
    );
    store.reset_offsets("g", "t", &[(1, 10)]).await.unwrap();
    assert_eq!(
        store.subscription_offsets("g", "t").await.unwrap(),
        HashMap::from([(0, 1), (1, 10)])
    );
    store.forget_subscription("g").await.unwrap();
    assert!(store.subscription_offsets("g", "t").await.unwrap().is_empty());
    assert_eq!(
        store.subscription_offsets("other", "t").await.unwrap(),
        HashMap::from([(0, 9)])
    );
}

fn claim<'a>(member: &'a str, timeout: Duration) -> ClaimRequest<'a> {
    ClaimRequest {
        group: "g",
        topic: "jobs",
        member,
        member_timeout: timeout,
    }
}

/// What a claim answers: (held, share).
async fn claimed(store: &Store, request: ClaimRequest<'_>) -> (Vec<i32>, Vec<i32>) {
    let claimed = store.claim_partitions(request).await.unwrap();
    (claimed.held, claimed.share)
}

async fn members_share_partitions(store: Store, _: Kind) {
    store.shape_log("jobs", 4, TimeDelta::hours(1)).await.unwrap();
    let long = Duration::from_secs(30);
    assert_eq!(
        claimed(&store, claim("a", long)).await,
        (vec![0, 1, 2, 3], vec![0, 1, 2, 3])
    );
    // b joins: every partition is held by a live member; its share is 1 and 3.
    assert_eq!(claimed(&store, claim("b", long)).await, (vec![], vec![1, 3]));
    // a still holds them all until it gives up what is not its share.
    assert_eq!(claimed(&store, claim("a", long)).await, (vec![0, 1, 2, 3], vec![0, 2]));
    store.release_partitions("g", "jobs", "a", &[1, 3]).await.unwrap();
    assert_eq!(claimed(&store, claim("b", long)).await, (vec![1, 3], vec![1, 3]));
    assert_eq!(claimed(&store, claim("a", long)).await, (vec![0, 2], vec![0, 2]));
    // Another group's claims are its own.
    let other = ClaimRequest {
        group: "h",
        ..claim("b", long)
    };
    assert_eq!(claimed(&store, other).await.0, [0, 1, 2, 3]);
    // Releasing what another member holds does nothing.
    store.release_partitions("g", "jobs", "a", &[1]).await.unwrap();
    assert_eq!(claimed(&store, claim("b", long)).await.0, [1, 3]);
    assert_eq!(store.group_members("g", "jobs", long).await.unwrap(), ["a", "b"]);
    // a leaves: b's share is everything, and the partitions are free at once.
    store.leave_group("g", "jobs", "a").await.unwrap();
    assert_eq!(store.group_members("g", "jobs", long).await.unwrap(), ["b"]);
    assert_eq!(
        claimed(&store, claim("b", long)).await,
        (vec![0, 1, 2, 3], vec![0, 1, 2, 3])
    );
    // A topic with no log is not there to share.
    let nowhere = ClaimRequest {
        topic: "nowhere",
        ..claim("a", long)
    };
    assert!(matches!(
        store.claim_partitions(nowhere).await,
        Err(StoreError::Missing(_))
    ));
}

async fn silent_members_lose_their_partitions(store: Store, _: Kind) {
    store.shape_log("jobs", 4, TimeDelta::hours(1)).await.unwrap();
    let short = Duration::from_secs(1);
    assert_eq!(claimed(&store, claim("a", short)).await.0, [0, 1, 2, 3]);
    assert!(claimed(&store, claim("b", short)).await.0.is_empty());
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    // a went silent: b alone is live, and takes them all.
    assert_eq!(claimed(&store, claim("b", short)).await.0, [0, 1, 2, 3]);
    // a back: its share is held by b, alive.
    assert!(claimed(&store, claim("a", short)).await.0.is_empty());
    store.release_partitions("g", "jobs", "b", &[0, 2]).await.unwrap();
    assert_eq!(claimed(&store, claim("a", short)).await.0, [0, 2]);
}

async fn retention_drops_whole_slices(store: Store, kind: Kind) {
    store.shape_log("short", 2, TimeDelta::hours(1)).await.unwrap();
    store.shape_log("long", 1, TimeDelta::days(3)).await.unwrap();
    let landed = store
        .publish(vec![
            publish("short", 0, None, b"a"),
            publish("short", 0, None, b"b"),
            publish("short", 1, None, b"c"),
            publish("short", 0, None, b"d"),
            publish("long", 0, None, b"kept"),
        ])
        .await
        .unwrap();
    let published_at = landed[0].published_at;
    // Nothing is old enough yet.
    assert!(store.maintain_logs(Utc::now()).await.unwrap().is_empty());
    assert_eq!(store.read_log("short", 0, 0, 10).await.unwrap().len(), 3);

    let later = Utc::now() + TimeDelta::hours(3);
    let dropped = store.maintain_logs(later).await.unwrap();
    assert!(dropped.iter().all(|d| d.topic == "short"), "{dropped:?}");
    let slice = dropped
        .iter()
        .find(|d| d.slice_start == slice_start(published_at, TimeDelta::hours(1)))
        .unwrap_or_else(|| panic!("the slice of the publish is dropped: {dropped:?}"));
    if kind == Kind::Embedded {
        assert_eq!(slice.messages, 4);
    }
    assert!(dropped.iter().all(|d| d.messages >= 0));
    // Dropped once.
    assert!(store.maintain_logs(later).await.unwrap().is_empty());

    assert!(store.read_log("short", 0, 0, 10).await.unwrap().is_empty());
    assert!(store.read_log("short", 1, 0, 10).await.unwrap().is_empty());
    assert_eq!(
        store.log_bounds("short").await.unwrap(),
        bounds(&[(0, 3, 3), (1, 1, 1)])
    );
    assert_eq!(store.offsets_at("short", published_at).await.unwrap(), [(0, 3), (1, 1)]);
    // Offsets go on from where they were.
    let again = store.publish(vec![publish("short", 0, None, b"e")]).await.unwrap();
    assert_eq!(again[0].offset, 3);
    assert_eq!(offsets(&store.read_log("short", 0, 0, 10).await.unwrap()), [3]);
    assert_eq!(
        store.log_bounds("short").await.unwrap(),
        bounds(&[(0, 3, 4), (1, 1, 1)])
    );
    // The long-kept topic is untouched.
    assert_eq!(store.read_log("long", 0, 0, 10).await.unwrap().len(), 1);
}

async fn dropped_logs_start_afresh(store: Store, _: Kind) {
    store.shape_log("t", 2, TimeDelta::hours(1)).await.unwrap();
    store.shape_log("u", 1, TimeDelta::hours(1)).await.unwrap();
    store
        .publish(vec![
            publish("t", 0, None, b"old"),
            publish("t", 0, None, b"older"),
            publish("u", 0, None, b"u"),
        ])
        .await
        .unwrap();
    store.commit_offsets("g", "t", &[(0, 2)]).await.unwrap();
    store.commit_offsets("g", "u", &[(0, 1)]).await.unwrap();
    let member = ClaimRequest {
        group: "g",
        topic: "t",
        member: "a",
        member_timeout: Duration::from_secs(30),
    };
    assert_eq!(claimed(&store, member.clone()).await.0, [0, 1]);

    store.drop_log("t").await.unwrap();
    assert!(is_missing(store.read_log("t", 0, 0, 10).await));
    assert!(is_missing(store.log_bounds("t").await));
    assert!(is_missing(store.publish(vec![publish("t", 0, None, b"x")]).await));
    assert!(store.subscription_offsets("g", "t").await.unwrap().is_empty());
    assert_eq!(
        store.subscription_offsets("g", "u").await.unwrap(),
        HashMap::from([(0, 1)])
    );
    // Dropping what is not there is not an error.
    store.drop_log("t").await.unwrap();

    store.shape_log("t", 2, TimeDelta::hours(1)).await.unwrap();
    assert_eq!(store.log_bounds("t").await.unwrap(), bounds(&[(0, 0, 0), (1, 0, 0)]));
    let landed = store.publish(vec![publish("t", 0, None, b"new")]).await.unwrap();
    assert_eq!(landed[0].offset, 0);
    let read = store.read_log("t", 0, 0, 10).await.unwrap();
    assert_eq!(
        read.iter().map(|m| m.body.as_slice()).collect::<Vec<_>>(),
        [b"new".as_slice()]
    );
    // The old member's claims went with the log.
    let other = ClaimRequest { member: "b", ..member };
    assert_eq!(claimed(&store, other).await.0, [0, 1]);
    assert_eq!(store.read_log("u", 0, 0, 10).await.unwrap().len(), 1);
}

async fn searches_find_messages_newest_first(store: Store, _: Kind) {
    store.shape_log("s", 2, TimeDelta::hours(1)).await.unwrap();
    store.shape_log("elsewhere", 1, TimeDelta::hours(1)).await.unwrap();
    let first = vec![
        publish("s", 0, Some("k1"), b"hello world"),
        publish("s", 1, Some("k2"), b"goodbye"),
        publish("s", 0, None, &[0xff, b'n', b'e', b'e', b'd', b'l', b'e', 0x00]),
        publish("elsewhere", 0, Some("k1"), b"hello needle"),
    ];
    store.publish(first.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = vec![
        publish("s", 1, Some("k1"), b"hello again"),
        publish("s", 0, None, b"a needle"),
    ];
    store.publish(second.clone()).await.unwrap();

    let search = |f: fn(&mut LogSearch)| {
        let mut search = LogSearch {
            limit: 100,
            ..LogSearch::default()
        };
        f(&mut search);
        search
    };
    let found = |messages: &[LogMessage]| messages.iter().map(|m| (m.partition, m.offset)).collect::<Vec<_>>();

    // Everything, newest first: by time, then partition, then offset, down.
    let all = store.search_log("s", &search(|_| {})).await.unwrap();
    assert_eq!(found(&all), [(1, 1), (0, 2), (1, 0), (0, 1), (0, 0)]);

    let by_key = store
        .search_log("s", &search(|s| s.key = Some("k1".into())))
        .await
        .unwrap();
    assert_eq!(found(&by_key), [(1, 1), (0, 0)]);
    assert_eq!(by_key[0].body, b"hello again");

    let mut by_id = LogSearch {
        id: Some(first[1].id),
        limit: 10,
        ..LogSearch::default()
    };
    let hit = store.search_log("s", &by_id).await.unwrap();
    assert_eq!(hit.len(), 1);
    assert_eq!(
        (hit[0].id, hit[0].body.as_slice()),
        (first[1].id, b"goodbye".as_slice())
    );
    by_id.id = Some(first[3].id);
    assert!(
        store.search_log("s", &by_id).await.unwrap().is_empty(),
        "another topic's message"
    );

    let needles = store
        .search_log("s", &search(|s| s.contains = Some("needle".into())))
        .await
        .unwrap();
    assert_eq!(found(&needles), [(0, 2), (0, 1)]);
    let hellos = store
        .search_log("s", &search(|s| s.contains = Some("hello".into())))
        .await
        .unwrap();
    assert_eq!(found(&hellos), [(1, 1), (0, 0)]);
    assert!(store
        .search_log("s", &search(|s| s.contains = Some("absent".into())))
        .await
        .unwrap()
        .is_empty());

    let mut window = LogSearch {
        from: Some(between),
        limit: 100,
        ..LogSearch::default()
    };
    assert_eq!(found(&store.search_log("s", &window).await.unwrap()), [(1, 1), (0, 2)]);
    window.from = None;
    window.to = Some(between);
    assert_eq!(
        found(&store.search_log("s", &window).await.unwrap()),
        [(1, 0), (0, 1), (0, 0)]
    );
    window.from = Some(between - TimeDelta::hours(2));
    window.key = Some("k2".into());
    assert_eq!(found(&store.search_log("s", &window).await.unwrap()), [(1, 0)]);
    window.from = Some(between + TimeDelta::hours(2));
    window.to = None;
    window.key = None;
    assert!(store.search_log("s", &window).await.unwrap().is_empty());

    // Pages of two, each below the last one seen.
    let mut pages = Vec::new();
    let mut page = LogSearch {
        limit: 2,
        ..LogSearch::default()
    };
    loop {
        let got = store.search_log("s", &page).await.unwrap();
        if got.is_empty() {
            break;
        }
        assert!(got.len() <= 2);
        let last = got.last().unwrap();
        page.before = Some((last.published_at, last.partition, last.offset));
        pages.push(found(&got));
        assert!(pages.len() <= 3, "{pages:?}");
    }
    assert_eq!(pages, [vec![(1, 1), (0, 2)], vec![(1, 0), (0, 1)], vec![(0, 0)]]);
    // A cursor with filters: below the newest k1, the older k1.
    let newest: DateTime<Utc> = all[0].published_at;
    let cursor = LogSearch {
        key: Some("k1".into()),
        before: Some((newest, 1, 1)),
        limit: 10,
        ..LogSearch::default()
    };
    assert_eq!(found(&store.search_log("s", &cursor).await.unwrap()), [(0, 0)]);

    assert!(is_missing(store.search_log("nowhere", &page).await));
}

/// An embedded store in a directory of its own, removed when dropped.
struct Embedded(std::path::PathBuf);

impl Embedded {
    async fn open() -> (Self, Store) {
        let dir = std::env::temp_dir().join(format!("bida-topics-{}", Uuid::new_v4().simple()));
        let store = Store::open_at(&StoreLocation::Embedded(dir.clone()), &StoreConfig::default())
            .await
            .unwrap();
        (Self(dir), store)
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Each scenario as a test on each store: `postgres::<name>`, `embedded::<name>`.
macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let db = TestDatabase::create().await;
                    let store = Store::open(db.url(), &StoreConfig::default()).await.unwrap();
                    super::$scenario(store, Kind::Postgres).await;
                }
            )*
        }

        mod embedded {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let (_dir, store) = Embedded::open().await;
                    super::$scenario(store, Kind::Embedded).await;
                }
            )*
        }
    };
}

on_both_stores!(
    publishes_land_in_order,
    shaping_grows_partitions_only,
    concurrent_publishes_take_every_offset_once,
    subscription_offsets_move_forward,
    members_share_partitions,
    silent_members_lose_their_partitions,
    retention_drops_whole_slices,
    dropped_logs_start_afresh,
    searches_find_messages_newest_first,
);
