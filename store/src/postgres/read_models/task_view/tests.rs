//! A page read in runs is the page read at once, and pages cut short by the
//! deadline, followed cursor to cursor, list every task once: over random
//! lists (ties in creation time included), filters, page and run sizes.

use super::*;
use crate::StoreConfig;
use bida_domain::task::EndpointHost;
use bida_testkit::TestDatabase;
use chrono::TimeDelta;

/// xorshift64*: enough to vary the cases; the seed is printed to replay one.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn maybe<'a>(&mut self, items: &[&'a str]) -> Option<&'a str> {
        (self.below(2) == 0).then(|| self.pick(items))
    }
}

const STATUSES: [&str; 3] = ["delivered", "dead", "pending"];
const HOSTS: [&str; 3] = ["a.example", "b.example", "rare.example"];
const APPS: [&str; 2] = ["orders", "billing"];

/// `tasks` tasks over `instants` creation times a second apart.
async fn fill(store: &PgStore, random: &mut Random, tasks: usize, instants: u64, start: DateTime<Utc>) {
    let mut ids = Vec::new();
    let (mut statuses, mut hosts, mut sources, mut targets, mut created) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for n in 0..tasks {
        ids.push(format!("task-{n:05}-{}", random.below(1000)));
        statuses.push(random.pick(&STATUSES));
        hosts.push(random.pick(&HOSTS));
        sources.push(random.maybe(&APPS).map(str::to_string));
        targets.push(random.maybe(&APPS).map(str::to_string));
        created.push(start + TimeDelta::seconds(random.below(instants) as i64));
    }
    sqlx::query(
        "INSERT INTO task_view (id, status, source_app, target_app, created_at, updated_at, endpoint_host, doc)
         SELECT id, status, source, target, created, created, host,
                json_build_object('id', id, 'status', status, 'message_id', id, 'method', 'POST',
                                  'url', 'http://' || host || '/hook', 'attempt_count', 1, 'max_attempts', 3,
                                  'created_at', created, 'updated_at', created)
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
              AS t(id, status, host, source, target, created)",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&hosts)
    .bind(&sources)
    .bind(&targets)
    .bind(&created)
    .execute(store.pool())
    .await
    .unwrap();
}

fn random_filter(random: &mut Random, start: DateTime<Utc>, instants: u64) -> TaskFilter {
    let mut at = || start + TimeDelta::seconds(random.below(instants) as i64);
    let (after, before) = (at(), at());
    TaskFilter {
        status: random.maybe(&STATUSES).and_then(TaskStatus::parse),
        endpoint_host: random.maybe(&HOSTS).map(EndpointHost::typed),
        app: random.maybe(&APPS).map(str::to_string),
        created_after: (random.below(3) == 0).then_some(after),
        created_before: (random.below(3) == 0).then_some(before),
        ..TaskFilter::default()
    }
}

fn ids(page: &TaskPage) -> Vec<String> {
    page.items.iter().map(|t| t.id.clone()).collect()
}

/// Every page of the list, following each page's cursor from the first.
async fn pages(store: &PgStore, filter: &TaskFilter, limit: i64, run: Option<(i64, Duration)>) -> Vec<TaskPage> {
    let mut pages: Vec<TaskPage> = Vec::new();
    loop {
        let after = pages.last().and_then(|p| p.next_cursor.clone());
        if !pages.is_empty() && after.is_none() {
            return pages;
        }
        let page = match run {
            None => store.page_at_once(filter, after.as_ref(), limit).await,
            Some((tasks, budget)) => {
                store
                    .page_in_runs(filter, after.as_ref(), limit, tasks, Instant::now() + budget)
                    .await
            }
        };
        pages.push(page.unwrap());
        assert!(pages.len() < 10_000, "the cursors go round in circles");
    }
}

#[tokio::test]
async fn pages_read_in_runs_are_the_pages_read_at_once_and_cut_pages_miss_no_task() {
    let seed = std::env::var("BIDA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_micros() as u64 | 1);
    println!("BIDA_TEST_SEED={seed}");
    let mut random = Random(seed);
    let db = TestDatabase::create().await;
    let store = PgStore::open(db.url(), &StoreConfig::default()).await.unwrap();
    let start = Utc::now() - TimeDelta::days(1);
    let instants = 1 + random.below(60);
    fill(&store, &mut random, 400, instants, start).await;

    for case in 0..40 {
        let filter = random_filter(&mut random, start, instants);
        let limit = 1 + random.below(25) as i64;
        let run_tasks = 1 + random.below(60) as i64;
        let context = format!("seed {seed}, case {case}: {filter:?}, limit {limit}, runs of {run_tasks}");
        let at_once = pages(&store, &filter, limit, None).await;
        assert!(at_once.iter().all(|p| p.stopped_at.is_none()), "{context}");

        // With time to spare, runs give the same pages.
        let in_runs = pages(&store, &filter, limit, Some((run_tasks, Duration::from_secs(600)))).await;
        assert_eq!(in_runs, at_once, "{context}");

        // Out of time after each run: pages are cut, none is over-full, and
        // together they list every task once, in order.
        let cut = pages(&store, &filter, limit, Some((run_tasks, Duration::ZERO))).await;
        let listed: Vec<String> = cut.iter().flat_map(ids).collect();
        let expected: Vec<String> = at_once.iter().flat_map(ids).collect();
        assert_eq!(listed, expected, "{context}");
        for page in &cut {
            assert!(page.items.len() as i64 <= limit, "{context}");
            if page.stopped_at.is_some() {
                assert!(page.next_cursor.is_some(), "{context}");
            }
        }
    }
}
