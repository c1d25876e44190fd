-- Fills a migrated Bida database with 1,000,000 finished tasks spread over
-- the last 7 days (about 143,000 a day), for measuring the console's task
-- list and search at that size (README, "Console"):
--
--   createdb bida_million && bida migrate --database-url postgres://localhost/bida_million
--   psql -d bida_million -f bench/sql/million_tasks.sql        (about 2 minutes)
--
-- Each task has its submission event (what a search by body text reads) and
-- its task-list row; 1 in 10 is dead, the rest delivered; 20 apps; 50
-- endpoint hosts (hook-N.example.com) and one with 10 tasks
-- (rare.example.com). (A
-- search by idempotency key or message id is the same primary-key lookup as
-- one by task id.)
\timing on
SELECT bida_events_partition(d)
FROM generate_series(floor(extract(epoch FROM now()) / 86400)::int - 8,
                     floor(extract(epoch FROM now()) / 86400)::int) AS d;

CREATE TEMP TABLE million AS
SELECT i,
       gen_random_uuid()::text AS id,
       now() - (i * interval '604 ms') AS at,
       'app-' || (i % 20) AS app,
       CASE WHEN i % 10 = 0 THEN 'dead' ELSE 'delivered' END AS status,
       CASE WHEN i % 100000 = 7 THEN 'rare.example.com' ELSE 'hook-' || (i % 50) || '.example.com' END AS host
FROM generate_series(1, 1000000) AS i;

INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at, epoch)
SELECT 'callback_task', id, 1, 'TaskSubmitted', '1',
       json_build_object('TaskSubmitted', json_build_object(
           'spec', json_build_object(
               'message_id', id,
               'request', json_build_object('url', 'https://' || host || '/paid', 'method', 'POST',
                                            'body', json_build_object('text', '{"order":' || i || ',"status":"paid"}')),
               'policy', json_build_object('max_attempts', 5, 'timeout_ms', 3000),
               'source_app', app),
           'submitted_at', at, 'due_at', at)),
       '{}'::jsonb, at, floor(extract(epoch FROM at) / 86400)::int
FROM million;

INSERT INTO task_view (id, status, source_app, target_app, created_at, updated_at, endpoint_host, doc)
SELECT id, status, app, NULL, at, at, host,
       json_build_object('id', id, 'status', status, 'message_id', id, 'method', 'POST',
                         'url', 'https://' || host || '/paid', 'source_app', app,
                         'attempt_count', 1, 'max_attempts', 5, 'created_at', at, 'updated_at', at,
                         'finished_at', at)
FROM million;

INSERT INTO task_streams (task_id, epoch)
SELECT id, floor(extract(epoch FROM at) / 86400)::int FROM million;

ANALYZE events;
ANALYZE task_view;
SELECT count(*) AS tasks FROM task_view;
