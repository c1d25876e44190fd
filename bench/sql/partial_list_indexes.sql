-- Do the task list's partial indexes (migrations 0007, 0014) serve its queries as
-- prepared statements? Run on a scratch database holding Bida's schema:
--   createdb -h 127.0.0.1 scratch
--   for f in migrations/*.up.sql; do psql -h 127.0.0.1 -d scratch -q -f $f; done
--   psql -h 127.0.0.1 -d scratch -f bench/sql/partial_list_indexes.sql
-- Expected: the dead-letter list walks task_view_status, the app filters
-- task_view_source_app, an app's dead letters task_view_target_app_status
-- (migration 0014), with plans made generic (parameters unknown).
SET client_min_messages = warning;
TRUNCATE task_view;
INSERT INTO task_view (id, status, source_app, target_app, created_at, updated_at, doc, consumer_id)
SELECT 't' || g, CASE WHEN g % 1000 = 0 THEN 'dead' ELSE 'delivered' END,
       CASE WHEN g % 50 = 0 THEN 'orders' END, CASE WHEN g % 70 = 0 THEN 'billing' END,
       now() - g * interval '1 ms', now(), '{}', CASE WHEN g % 2 = 0 THEN 'c1' END
FROM generate_series(1, 300000) g;
ANALYZE task_view;
SET plan_cache_mode = force_generic_plan;
-- The shapes TaskList::select builds: the status as a literal, apps as parameters.
PREPARE dead(int) AS
    SELECT v.id FROM task_view v LEFT JOIN task_schedule s ON s.task_id = v.id
    WHERE true AND v.status = 'dead' ORDER BY v.created_at DESC, v.id DESC LIMIT $1;
EXPLAIN EXECUTE dead(51);
PREPARE by_app(text, int) AS
    SELECT v.id FROM task_view v LEFT JOIN task_schedule s ON s.task_id = v.id
    WHERE true AND v.source_app = $1 ORDER BY v.created_at DESC, v.id DESC LIMIT $2;
EXPLAIN EXECUTE by_app('orders', 51);
PREPARE dead_by_target(text, int) AS
    SELECT v.id FROM task_view v LEFT JOIN task_schedule s ON s.task_id = v.id
    WHERE true AND v.target_app = $1 AND v.status = 'dead' ORDER BY v.created_at DESC, v.id DESC LIMIT $2;
EXPLAIN EXECUTE dead_by_target('billing', 51);
