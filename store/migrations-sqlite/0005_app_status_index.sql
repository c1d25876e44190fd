-- An app's tasks in one status (see the Postgres migration 0014).
CREATE INDEX task_view_source_app_status ON task_view (source_app, status, created_at DESC, id DESC)
    WHERE status <> 'delivered' AND source_app IS NOT NULL;
CREATE INDEX task_view_target_app_status ON task_view (target_app, status, created_at DESC, id DESC)
    WHERE status <> 'delivered' AND target_app IS NOT NULL;
