//! Tasks by stored status and apps (`task_counts`), moved as the task list
//! folds so that nobody counts the list to know them.

use bida_domain::task::{TaskStatus, TaskSummary};
use bida_store::{Fold, StatusCountChange};
use std::collections::BTreeMap;

use crate::ProjectionError;

/// A page's changes to `task_counts`, keyed by (status, source app, target
/// app) with '' for no app. Ordered, so concurrent writers lock rows alike.
#[derive(Debug, Default)]
pub struct StatusMoves(BTreeMap<(TaskStatus, String, String), i64>);

impl StatusMoves {
    /// A task went from `before` (none: new to the list) to its summary's status.
    pub fn moved(&mut self, before: Option<TaskStatus>, summary: &TaskSummary) {
        if before == Some(summary.status) {
            return;
        }
        let source = summary.source_app.clone().unwrap_or_default();
        let target = summary.target_app.clone().unwrap_or_default();
        if let Some(before) = before {
            *self.0.entry((before, source.clone(), target.clone())).or_default() -= 1;
        }
        *self.0.entry((summary.status, source, target)).or_default() += 1;
    }

    pub async fn save(self, fold: &mut Fold) -> Result<(), ProjectionError> {
        let changes: Vec<StatusCountChange> = self
            .0
            .into_iter()
            .map(|((status, source_app, target_app), change)| StatusCountChange {
                status,
                source_app,
                target_app,
                change,
            })
            .collect();
        fold.add_status_counts(&changes).await?;
        Ok(())
    }
}
