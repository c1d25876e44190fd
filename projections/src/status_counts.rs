//! Tasks by stored status and apps (`task_counts`), moved as the task list
//! folds so that nobody counts the list to know them.

use bida_domain::task::{TaskStatus, TaskSummary};
use sqlx::{Postgres, Transaction};
use std::collections::BTreeMap;

use crate::ProjectionError;

/// A page's changes to `task_counts`, keyed by (status, source app, target
/// app) with '' for no app. Ordered, so concurrent writers lock rows alike.
#[derive(Debug, Default)]
pub struct StatusMoves(BTreeMap<(&'static str, String, String), i64>);

impl StatusMoves {
    /// A task went from `before` (none: new to the list) to its summary's status.
    pub fn moved(&mut self, before: Option<TaskStatus>, summary: &TaskSummary) {
        if before == Some(summary.status) {
            return;
        }
        let source = summary.source_app.clone().unwrap_or_default();
        let target = summary.target_app.clone().unwrap_or_default();
        if let Some(before) = before {
            *self
                .0
                .entry((before.as_str(), source.clone(), target.clone()))
                .or_default() -= 1;
        }
        *self.0.entry((summary.status.as_str(), source, target)).or_default() += 1;
    }

    pub async fn save(self, tx: &mut Transaction<'static, Postgres>) -> Result<(), ProjectionError> {
        let moves: Vec<_> = self.0.into_iter().filter(|(_, n)| *n != 0).collect();
        if moves.is_empty() {
            return Ok(());
        }
        let mut statuses = Vec::with_capacity(moves.len());
        let mut sources = Vec::with_capacity(moves.len());
        let mut targets = Vec::with_capacity(moves.len());
        let mut counts = Vec::with_capacity(moves.len());
        for ((status, source, target), n) in moves {
            statuses.push(status);
            sources.push(source);
            targets.push(target);
            counts.push(n);
        }
        sqlx::query(
            "INSERT INTO task_counts AS c (status, source_app, target_app, n)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[])
             ON CONFLICT (status, source_app, target_app) DO UPDATE SET n = c.n + EXCLUDED.n",
        )
        .bind(&statuses)
        .bind(&sources)
        .bind(&targets)
        .bind(&counts)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
