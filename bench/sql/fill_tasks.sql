-- One chunk of `bida-bench scale`'s history: finished tasks $1 to $2 (of $3),
-- created evenly from $4 (epoch seconds) over $5 seconds, written straight
-- into a migrated store whose node is stopped. Like million_tasks.sql, but
-- the events and list rows are the ones Bida writes (the bench renders them
-- from the domain's own types, so a rebuild folds them as it folds Bida's):
--
--   $6: a dead task's texts: its TaskSubmitted, TaskDeadLettered, list document
--   $7: a delivered task's texts: its MessageDelivered, list document
--
-- In the texts, @ID@, @ORDER@, @HOST@, @APP@, @CONSUMER@ and the time
-- 2000-01-01T00:00:00Z stand for each task's own. 1 in 10 is dead (an API
-- task of its app); the rest are consumers' messages delivered at their
-- first attempt (4 consumers); 20 apps; 50 endpoint hosts
-- (hook-N.example.com) and rare.example.com with 1 in 100,000.
--
-- One statement, so that each chunk is one transaction of one round trip.
WITH chunk AS MATERIALIZED (
    SELECT i,
           gen_random_uuid()::text AS id,
           to_timestamp($4::float8 + (i::float8 - 0.5) * $5::float8 / $3::float8) AS at,
           'app-' || (i % 20) AS app,
           i % 10 = 0 AS dead,
           CASE WHEN i % 100000 = 7 THEN 'rare.example.com' ELSE 'hook-' || (i % 50) || '.example.com' END AS host,
           'consumer-' || (i % 4) AS consumer
    FROM generate_series($1::bigint, $2::bigint) AS i
), filled AS MATERIALIZED (
    SELECT c.*,
           floor(extract(epoch FROM c.at) / 86400)::int AS epoch,
           (SELECT array_agg(
                       replace(replace(replace(replace(replace(replace(t,
                           '@ID@', c.id), '@ORDER@', c.i::text), '@HOST@', c.host), '@APP@', c.app),
                           '@CONSUMER@', c.consumer),
                           '2000-01-01T00:00:00Z', to_char(c.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                       ORDER BY n)
            FROM unnest(CASE WHEN c.dead THEN $6::text[] ELSE $7::text[] END) WITH ORDINALITY AS u(t, n)) AS texts
    FROM chunk c
), appended AS (
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, recorded_at, epoch)
    SELECT 'callback_task', f.id, e.sequence, e.event_type, '1', f.texts[e.sequence]::json, f.at, f.epoch
    FROM filled f
    CROSS JOIN LATERAL (VALUES (1, CASE WHEN f.dead THEN 'TaskSubmitted' ELSE 'MessageDelivered' END),
                               (2, 'TaskDeadLettered')) AS e(sequence, event_type)
    WHERE e.sequence = 1 OR f.dead
), listed AS (
    INSERT INTO task_view (id, status, source_app, target_app, created_at, updated_at, doc, consumer_id, endpoint_host)
    SELECT id, CASE WHEN dead THEN 'dead' ELSE 'delivered' END, app, NULL, at, at,
           texts[array_length(texts, 1)]::json, CASE WHEN NOT dead THEN consumer END, host
    FROM filled
)
INSERT INTO task_streams (task_id, epoch)
SELECT id, epoch FROM filled
