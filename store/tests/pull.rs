//! Pull lanes on both stores: what members' pulls lease, what nodes never
//! claim, and how a lease ends (ack, expiry, a member gone).

use bida_domain::task::ScheduleChange;
use bida_store::{
    Append, LeaseRequest, Leased, NewEvent, ScheduleWrite, Store, StoreConfig, StoreLocation, EXPIRY_HOLD,
};
use bida_testkit::TestDatabase;
use chrono::Utc;
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

fn row(task_id: &str, sequence: i64, change: ScheduleChange, lane: Option<&str>) -> Append {
    Append {
        events: vec![NewEvent {
            aggregate_type: Cow::Borrowed("test"),
            aggregate_id: task_id.to_string(),
            sequence,
            event_type: Cow::Borrowed("Happened"),
            event_version: Cow::Borrowed("1"),
            payload: "{}".into(),
            metadata: None,
            epoch: 0,
        }],
        schedule: Some(ScheduleWrite {
            task_id: task_id.to_string(),
            change,
            owner: None,
            lane: lane.map(str::to_string),
        }),
        patient: false,
    }
}

fn request<'a>(lane: &'a str, member: &'a str, lease: Duration, limit: i64) -> LeaseRequest<'a> {
    LeaseRequest {
        consumer_id: "c1",
        lane,
        member,
        lease,
        member_timeout: Duration::from_secs(30),
        limit,
    }
}

fn granted(leased: &[Leased]) -> Vec<(String, Uuid)> {
    leased
        .iter()
        .filter_map(|l| match l {
            Leased::Granted { task_id, lease_id, .. } => Some((task_id.clone(), *lease_id)),
            Leased::Expired { .. } => None,
        })
        .collect()
}

async fn lanes_hold_their_rows_for_members(store: Store) {
    let now = Utc::now();
    for i in 0..10 {
        store
            .append(row(&format!("p{i}"), 1, ScheduleChange::Due(now), Some("c1")))
            .await
            .unwrap();
    }
    store
        .append(row("http", 1, ScheduleChange::Due(now), None))
        .await
        .unwrap();
    store
        .append(row("other", 1, ScheduleChange::Due(now), Some("c2")))
        .await
        .unwrap();

    // A node's scheduler claims only the row outside any lane.
    let claimed = store.claim_due(Uuid::new_v4(), Duration::ZERO, 100).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.task_id.as_str()).collect::<Vec<_>>(), ["http"]);

    for member in ["m1", "m2", "m3"] {
        store.touch_member("c1", member, Some("10.0.0.1"), None).await.unwrap();
    }
    let lease = Duration::from_secs(60);
    let a = granted(&store.lease_due(request("c1", "m1", lease, 4)).await.unwrap());
    let b = granted(&store.lease_due(request("c1", "m2", lease, 4)).await.unwrap());
    let c = granted(&store.lease_due(request("c1", "m3", lease, 4)).await.unwrap());
    assert_eq!((a.len(), b.len(), c.len()), (4, 4, 2));
    let all: BTreeSet<&str> = a.iter().chain(&b).chain(&c).map(|(id, _)| id.as_str()).collect();
    assert_eq!(all.len(), 10, "disjoint, and together every row of the lane");
    assert!(all.iter().all(|id| id.starts_with('p')));
    assert!(store.lease_due(request("c1", "m1", lease, 4)).await.unwrap().is_empty());

    // Held leases are found by id, with who holds them.
    let ids: Vec<Uuid> = a.iter().map(|(_, lease)| *lease).chain([Uuid::new_v4()]).collect();
    let held = store.held_leases(&ids).await.unwrap();
    assert_eq!(held.len(), 4);
    assert!(held.iter().all(|h| h.member == "m1" && h.lane == "c1"));

    // Any event of the task ends its lease (here: a retry later).
    let (first, first_lease) = a[0].clone();
    store
        .append(row(&first, 2, ScheduleChange::Due(now), None))
        .await
        .unwrap();
    assert!(store.held_leases(&[first_lease]).await.unwrap().is_empty());
    let again = granted(&store.lease_due(request("c1", "m2", lease, 10)).await.unwrap());
    assert_eq!(
        again.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        [first.as_str()]
    );

    // A short lease runs out: the next pull sees it expired, not leased.
    store
        .append(row("short", 1, ScheduleChange::Due(now), Some("c1")))
        .await
        .unwrap();
    let short = granted(
        &store
            .lease_due(request("c1", "m3", Duration::from_millis(1), 1))
            .await
            .unwrap(),
    );
    assert_eq!(short[0].0, "short");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let expired = store.lease_due(request("c1", "m1", lease, 10)).await.unwrap();
    assert_eq!(
        expired,
        [Leased::Expired {
            task_id: "short".into(),
            member: "m3".into()
        }]
    );
    assert!(store.held_leases(&[short[0].1]).await.unwrap().is_empty());
    let schedule = store.schedule_of(&["short".into()]).await.unwrap();
    assert!(schedule["short"].due_at > Utc::now() + chrono::Duration::from_std(EXPIRY_HOLD / 2).unwrap());

    // Members and what waits in the lane.
    store.count_acks("c1", "m1", 3).await.unwrap();
    let members = store.members("c1").await.unwrap();
    assert_eq!(
        members.iter().map(|m| m.member.as_str()).collect::<Vec<_>>(),
        ["m1", "m2", "m3"]
    );
    assert_eq!(members[0].acked, 3);
    assert_eq!(members[0].leases, 3, "m1 holds a's leases but the one retried");
    assert_eq!(members[0].address.as_deref(), Some("10.0.0.1"));
    assert!(members[0].acked_per_sec(Utc::now()) > 0.0);
    let backlog = store.lane_backlogs("c1").await.unwrap();
    assert_eq!(backlog[0].lane, "c1");
    assert_eq!(backlog[0].leased + backlog[0].waiting, 11);
    assert_eq!(
        store.live_members("c1", Duration::from_secs(30)).await.unwrap(),
        ["m1", "m2", "m3"]
    );
    assert_eq!(store.forget_members("c1").await.unwrap(), 3);
    assert!(store
        .live_members("c1", Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
}

async fn a_gone_members_leases_return_at_once(store: Store) {
    store
        .append(row("t", 1, ScheduleChange::Due(Utc::now()), Some("c1/m1")))
        .await
        .unwrap();
    store.touch_member("c1", "m1", None, None).await.unwrap();
    let lease = granted(
        &store
            .lease_due(request("c1/m1", "m1", Duration::from_secs(600), 1))
            .await
            .unwrap(),
    );
    assert_eq!(lease.len(), 1);
    // Still alive: its lease stands.
    let mut alive = request("c1/m1", "m2", Duration::from_secs(60), 1);
    assert!(store.lease_due(alive.clone()).await.unwrap().is_empty());
    // Silent for longer than the timeout: gone, its lease returns.
    tokio::time::sleep(Duration::from_millis(50)).await;
    alive.member_timeout = Duration::from_millis(10);
    assert_eq!(
        store.lease_due(alive).await.unwrap(),
        [Leased::Expired {
            task_id: "t".into(),
            member: "m1".into()
        }]
    );
}

/// An expiry whose attempt was never recorded (its node died between the
/// pull that saw it and the record) is seen expired again once the hold
/// ends, never leased again as if the lost lease had not been an attempt.
async fn a_lost_expiry_is_expired_again(store: Store) {
    store
        .append(row("t", 1, ScheduleChange::Due(Utc::now()), Some("c1")))
        .await
        .unwrap();
    store.touch_member("c1", "m1", None, None).await.unwrap();
    let short = Duration::from_millis(1);
    assert_eq!(
        granted(&store.lease_due(request("c1", "m1", short, 1)).await.unwrap()).len(),
        1
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let expired = [Leased::Expired {
        task_id: "t".into(),
        member: "m1".into(),
    }];
    assert_eq!(store.lease_due(request("c1", "m1", short, 1)).await.unwrap(), expired);
    assert!(store.lease_due(request("c1", "m1", short, 1)).await.unwrap().is_empty());
    tokio::time::sleep(EXPIRY_HOLD + Duration::from_millis(100)).await;
    assert_eq!(store.lease_due(request("c1", "m1", short, 1)).await.unwrap(), expired);
    // Once the attempt is recorded (any event of the task), it is leased.
    store
        .append(row("t", 2, ScheduleChange::Due(Utc::now()), None))
        .await
        .unwrap();
    assert_eq!(
        granted(&store.lease_due(request("c1", "m1", short, 1)).await.unwrap()).len(),
        1
    );
}

#[tokio::test]
async fn lost_expiries_on_postgres() {
    let db = TestDatabase::create().await;
    let store = Store::open(db.url(), &StoreConfig::default()).await.unwrap();
    a_lost_expiry_is_expired_again(store).await;
}

#[tokio::test]
async fn lost_expiries_on_the_embedded_store() {
    let (_dir, store) = Embedded::open().await;
    a_lost_expiry_is_expired_again(store).await;
}

#[tokio::test]
async fn lanes_on_postgres() {
    let db = TestDatabase::create().await;
    let store = Store::open(db.url(), &StoreConfig::default()).await.unwrap();
    lanes_hold_their_rows_for_members(store).await;
}

/// An embedded store in a directory of its own, removed when dropped.
struct Embedded(std::path::PathBuf);

impl Embedded {
    async fn open() -> (Self, Store) {
        let dir = std::env::temp_dir().join(format!("bida-pull-{}", Uuid::new_v4().simple()));
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

#[tokio::test]
async fn lanes_on_the_embedded_store() {
    let (_dir, store) = Embedded::open().await;
    lanes_hold_their_rows_for_members(store).await;
}

#[tokio::test]
async fn gone_members_on_postgres() {
    let db = TestDatabase::create().await;
    let store = Store::open(db.url(), &StoreConfig::default()).await.unwrap();
    a_gone_members_leases_return_at_once(store).await;
}

#[tokio::test]
async fn gone_members_on_the_embedded_store() {
    let (_dir, store) = Embedded::open().await;
    a_gone_members_leases_return_at_once(store).await;
}
