DROP INDEX task_view_status;
DROP INDEX task_view_source_app;
DROP INDEX task_view_target_app;

CREATE INDEX task_view_status ON task_view (status, created_at DESC, id DESC);
CREATE INDEX task_view_source_app ON task_view (source_app, created_at DESC, id DESC);
CREATE INDEX task_view_target_app ON task_view (target_app, created_at DESC, id DESC);
