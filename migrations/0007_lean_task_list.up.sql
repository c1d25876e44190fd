-- The task list's filter indexes hold only the rows their filters can find.
-- Each index entry is written for every task the list folds, and most tasks
-- (a consumer's delivered messages) have no apps and are listed by status
-- 'delivered' only among all tasks; inserting 30,000 rows took 1.72 s with
-- the six indexes against 0.41 s with the primary key alone
-- (bench/sql/json_vs_jsonb.sql).
--
-- An app filter (`source_app = $1`) implies the app is not null, so those
-- partial indexes serve prepared statements too. The status filter is
-- written as a literal by the list query (statuses are a closed set), which
-- lets the planner prove `status = 'dead'` implies `status <> 'delivered'`;
-- listing delivered tasks walks `task_view_created`, where they are most rows.
DROP INDEX task_view_status;
DROP INDEX task_view_source_app;
DROP INDEX task_view_target_app;

CREATE INDEX task_view_status ON task_view (status, created_at DESC, id DESC) WHERE status <> 'delivered';
CREATE INDEX task_view_source_app ON task_view (source_app, created_at DESC, id DESC) WHERE source_app IS NOT NULL;
CREATE INDEX task_view_target_app ON task_view (target_app, created_at DESC, id DESC) WHERE target_app IS NOT NULL;
