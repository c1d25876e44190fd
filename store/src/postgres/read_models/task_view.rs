//! Task lists read from `task_view`, joined with the schedule to tell
//! which tasks are being delivered right now.

use async_trait::async_trait;
use bida_domain::task::{TaskCursor, TaskFilter, TaskPage, TaskStatus};
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};
use std::time::{Duration, Instant};

use crate::read_models::page_of;
use crate::{PgStore, StoreError, TaskListReads};

/// Statuses as readers see them: a due task claimed by a node is delivering.
const OBSERVED_STATUS: &str = "CASE WHEN v.status IN ('pending', 'retrying') AND s.owner IS NOT NULL
                                     AND s.due_at <= now() THEN 'delivering' ELSE v.status END";

/// An attempt is due and a node holds the task.
const IN_FLIGHT: &str = "(s.owner IS NOT NULL AND s.due_at <= now())";

/// Newest first (pages) or oldest first (replay).
#[derive(Clone, Copy, PartialEq)]
enum Order {
    NewestFirst,
    OldestFirst,
}

impl Order {
    /// The ORDER BY clause over columns of `table` (`v.` or none).
    fn sql(self, table: &str) -> String {
        match self {
            Self::NewestFirst => format!(" ORDER BY {table}created_at DESC, {table}id DESC"),
            Self::OldestFirst => format!(" ORDER BY {table}created_at, {table}id"),
        }
    }
}

/// What a query returns per task.
#[derive(Clone, Copy, PartialEq)]
enum Columns {
    /// id, summary document, observed status, created_at
    Summaries,
    /// id, created_at
    Ids,
}

/// Each branch walks one index in list order and stops at the limit; an
/// `app` filter is two branches (source, then target app), merged after.
fn select<'a>(
    filter: &'a TaskFilter,
    after: Option<&'a TaskCursor>,
    columns: Columns,
    order: Order,
    limit: i64,
) -> QueryBuilder<'a, Postgres> {
    let mut query = QueryBuilder::new(match columns {
        Columns::Summaries => "SELECT id, doc, observed, created_at FROM (",
        Columns::Ids => "SELECT id, created_at FROM (",
    });
    let branches: Vec<Option<(&str, &String)>> = match &filter.app {
        Some(app) => vec![Some(("source_app", app)), Some(("target_app", app))],
        None => vec![None],
    };
    for (n, branch) in branches.iter().enumerate() {
        if n > 0 {
            query.push(" UNION ALL ");
        }
        query.push("(SELECT v.id, v.created_at");
        if columns == Columns::Summaries {
            query
                .push(", v.doc::text AS doc, ")
                .push(OBSERVED_STATUS)
                .push(" AS observed");
        }
        if filter.status == Some(TaskStatus::Delivering) {
            // Few tasks are in flight: start from the schedule.
            query.push(" FROM task_schedule s JOIN task_view v ON v.id = s.task_id WHERE ");
            query.push(IN_FLIGHT).push(" AND v.status IN ('pending', 'retrying')");
        } else {
            query.push(" FROM task_view v LEFT JOIN task_schedule s ON s.task_id = v.id WHERE true");
            // A literal, not a parameter: the status index leaves delivered
            // tasks out (migrations/0007_lean_task_list.up.sql), and only a
            // literal lets the planner see it may use it. Statuses are a
            // closed set of plain words.
            if let Some(status) = filter.status {
                query.push(format_args!(" AND v.status = '{}'", status.as_str()));
            }
            if matches!(filter.status, Some(TaskStatus::Pending | TaskStatus::Retrying)) {
                query.push(" AND NOT ").push(IN_FLIGHT);
            }
        }
        if let Some((column, app)) = branch {
            query.push(format!(" AND v.{column} = ")).push_bind(*app);
            if n > 0 {
                // Counted once when it is both the source and the target.
                query.push(" AND v.source_app IS DISTINCT FROM ").push_bind(*app);
            }
        }
        if let Some(app) = &filter.source_app {
            query.push(" AND v.source_app = ").push_bind(app);
        }
        if let Some(app) = &filter.target_app {
            query.push(" AND v.target_app = ").push_bind(app);
        }
        if let Some(consumer) = &filter.consumer_id {
            query.push(" AND v.consumer_id = ").push_bind(consumer);
        }
        if let Some(host) = &filter.endpoint_host {
            query.push(" AND v.endpoint_host = ").push_bind(host.as_str());
        }
        if let Some(produced_to) = &filter.produced_to {
            query
                .push(" AND v.doc ->> 'url' LIKE ")
                .push_bind(produced_to.like_pattern())
                .push(" ESCAPE '\\'");
        }
        if let Some(ids) = &filter.ids {
            query.push(" AND v.id = ANY(").push_bind(ids).push(")");
        }
        if let Some(after) = filter.created_after {
            query.push(" AND v.created_at >= ").push_bind(after);
        }
        if let Some(before) = filter.created_before {
            query.push(" AND v.created_at < ").push_bind(before);
        }
        if let Some(cursor) = after {
            query.push(" AND (v.created_at, v.id) < (").push_bind(cursor.created_at);
            query.push(", ").push_bind(&cursor.id).push(")");
        }
        query.push(order.sql("v."));
        query.push(" LIMIT ").push_bind(limit).push(")");
    }
    query
        .push(") page")
        .push(order.sql(""))
        .push(" LIMIT ")
        .push_bind(limit);
    query
}

/// A list whose filter no index serves (the delivered tasks of a rare host)
/// is read newest first; over millions of tasks that outlasts any request.
/// Such a page is read for about this long, then answered with what was
/// found and a cursor from where reading stopped, as a body search stops
/// after 5 s.
const PAGE_BUDGET: Duration = Duration::from_secs(5);
/// The whole query gets this long first: a filter an index serves answers
/// in milliseconds, and a rare host over a million tasks in half a second.
const AT_ONCE: Duration = Duration::from_secs(1);
/// Tasks read per statement once a page is read in runs.
const RUN_TASKS: i64 = 50_000;

type SummaryRow = (String, String, String, DateTime<Utc>);

fn is_cancelled(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}

fn page_of_rows(rows: Vec<SummaryRow>, limit: i64) -> Result<TaskPage, StoreError> {
    page_of(
        rows.into_iter().map(|(id, doc, status, _)| (id, doc, status)).collect(),
        limit,
    )
}

impl PgStore {
    async fn page_at_once(
        &self,
        filter: &TaskFilter,
        after: Option<&TaskCursor>,
        limit: i64,
    ) -> Result<TaskPage, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(&format!("SET LOCAL statement_timeout = {}", AT_ONCE.as_millis()))
            .execute(&mut *tx)
            .await?;
        let rows: Vec<SummaryRow> = select(filter, after, Columns::Summaries, Order::NewestFirst, limit + 1)
            .build_query_as()
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        page_of_rows(rows, limit)
    }

    /// The page read a run of `run_tasks` tasks (newest first) at a time,
    /// until it is full, the list ends, or the deadline has passed.
    async fn page_in_runs(
        &self,
        filter: &TaskFilter,
        after: Option<&TaskCursor>,
        limit: i64,
        run_tasks: i64,
        deadline: Instant,
    ) -> Result<TaskPage, StoreError> {
        // A cursor with an empty id stands for "created before": every id is greater.
        let mut from = after.cloned().or_else(|| {
            filter.created_before.map(|created_at| TaskCursor {
                created_at,
                id: String::new(),
            })
        });
        let mut rows: Vec<SummaryRow> = Vec::new();
        loop {
            let end = self.run_end(from.as_ref(), run_tasks).await?;
            let mut run = filter.clone();
            run.created_after = filter.created_after.into_iter().chain(end).max();
            let wanted = limit + 1 - rows.len() as i64;
            let found: Vec<SummaryRow> = select(&run, from.as_ref(), Columns::Summaries, Order::NewestFirst, wanted)
                .build_query_as()
                .fetch_all(self.pool())
                .await?;
            rows.extend(found);
            // Done when the page is full or the run reached the list's end.
            let full = rows.len() as i64 > limit;
            let Some(end) = end.filter(|e| !full && filter.created_after.is_none_or(|a| *e > a)) else {
                return page_of_rows(rows, limit);
            };
            from = Some(TaskCursor {
                created_at: end,
                id: String::new(),
            });
            if Instant::now() >= deadline {
                let mut page = page_of_rows(rows, limit)?;
                page.next_cursor = from;
                page.stopped_at = Some(end);
                return Ok(page);
            }
        }
    }

    /// The creation time `run_tasks` tasks after `from` in list order: a run
    /// reads from `from` down to it (all tasks created then included).
    /// None when fewer are left.
    async fn run_end(&self, from: Option<&TaskCursor>, run_tasks: i64) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut query = QueryBuilder::<Postgres>::new("SELECT created_at FROM task_view");
        if let Some(from) = from {
            query.push(" WHERE (created_at, id) < (").push_bind(from.created_at);
            query.push(", ").push_bind(&from.id).push(")");
        }
        query
            .push(" ORDER BY created_at DESC, id DESC OFFSET ")
            .push_bind(run_tasks)
            .push(" LIMIT 1");
        Ok(query.build_query_scalar().fetch_optional(self.pool()).await?)
    }
}

#[async_trait]
impl TaskListReads for PgStore {
    async fn task_page(
        &self,
        filter: &TaskFilter,
        after: Option<&TaskCursor>,
        limit: i64,
    ) -> Result<TaskPage, StoreError> {
        if filter.matches_nothing() {
            return Ok(TaskPage::default());
        }
        let deadline = Instant::now() + PAGE_BUDGET;
        match self.page_at_once(filter, after, limit).await {
            Err(StoreError::Database(e)) if is_cancelled(&e) => {
                self.page_in_runs(filter, after, limit, RUN_TASKS, deadline).await
            }
            page => page,
        }
    }

    async fn task_ids(&self, filter: &TaskFilter, limit: i64) -> Result<Vec<String>, StoreError> {
        if filter.matches_nothing() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, DateTime<Utc>)> = select(filter, None, Columns::Ids, Order::OldestFirst, limit)
            .build_query_as()
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().map(|(id, _)| id).collect())
    }
}

#[cfg(test)]
mod tests;
