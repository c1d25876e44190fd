-- What each row a consumed message leaves behind costs Postgres to write:
-- its event (`events`), its id's registration (`task_streams`) and its
-- task-list row (`task_view`), each table alone, in a migrated store no node
-- uses. 100,000 rows per table in statements of 1,000 committed one by one
-- (a task-list page), or of `-v batch=N` (N up to 100,000; the writer's
-- batches in a drain hold about 40 events). The texts are shaped like a
-- delivered message of `bida-bench mq` (a 512-byte body; 1.2 KB event,
-- 0.5 KB list document).
--
--   createdb bida_write_costs
--   BIDA_DATABASE_URL=postgres://postgres@127.0.0.1/bida_write_costs bida migrate
--   psql -h 127.0.0.1 -U postgres -d bida_write_costs -f bench/sql/write_costs.sql
--   dropdb bida_write_costs
--
-- Prints microseconds per row of each table: the backend's time on an
-- otherwise idle machine, commits included.
--
-- `-v keys=random` gives the rows random ids, as a consumed message's task
-- id is (a UUIDv5 of its consumer and message id), instead of ids that grow
-- with time, as an API task's is (a UUIDv7): what key order costs the
-- three B-trees keyed by task id. Each run adds its rows to the tables,
-- so compare runs alternated.
\set ON_ERROR_STOP on
\if :{?batch}
\else
\set batch 1000
\endif
\if :{?keys}
\else
\set keys ordered
\endif
SELECT set_config('write_costs.keys', :'keys', false) AS "keys";
SELECT set_config('write_costs.batch', :'batch', false) AS "rows per statement";
SELECT bida_events_partition(floor(extract(epoch FROM now()) / 86400)::int);

CREATE TEMP TABLE write_cost (tbl text, rows bigint, micros float8);

-- The texts are built first, so that each timed insert parses JSON text as
-- the writer's and the task list's statements do (`::json`), no more.
CREATE TEMP TABLE wc_text (i int PRIMARY KEY, id text, payload text, doc text);
INSERT INTO wc_text
SELECT i,
       CASE current_setting('write_costs.keys')
            WHEN 'random' THEN md5(random()::text)::uuid::text
            -- A UUIDv7's shape: milliseconds first.
            ELSE (SELECT substr(t, 1, 8) || '-' || substr(t, 9, 4) || '-7000-8000-' || lpad(to_hex(i), 12, '0')
                  FROM lpad(to_hex(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') AS t)
       END,
       json_build_object('MessageDelivered', json_build_object(
           'spec', json_build_object(
               'message_id', 'wc-' || i,
               'request', json_build_object('method', 'POST', 'url', 'http://127.0.0.1:9/hook',
                                            'headers', json_build_object('content-type', 'application/json'),
                                            'body', repeat('x', 512)),
               'policy', json_build_object('max_attempts', 5, 'backoff', json_build_object(
                   'initial_ms', 1000, 'max_ms', 60000, 'multiplier', 2.0, 'jitter', 0.2),
                   'timeout_ms', 5000, 'success', json_build_array(200, 299)),
               'origin', json_build_object('consumer_id', 'c0123456789', 'consumer_version', 1,
                                           'position', json_build_object('topic', 'bench', 'partition', i % 8,
                                                                         'offset', i))),
           'submitted_at', now(),
           'attempt', json_build_object('number', 1, 'started_at', now(), 'latency_ms', 1, 'status_code', 200,
                                        'response_excerpt', 'ok')))::text,
       json_build_object('id', 'wc-' || i, 'status', 'delivered', 'message_id', 'wc-' || i,
                         'method', 'POST', 'url', 'http://127.0.0.1:9/hook', 'consumer_id', 'c0123456789',
                         'attempt_count', 1, 'max_attempts', 5, 'created_at', now(), 'updated_at', now(),
                         'finished_at', now(),
                         'last_attempt', json_build_object('number', 1, 'started_at', now(), 'latency_ms', 1,
                                                           'status_code', 200, 'response_excerpt', 'ok'))::text
FROM generate_series(0, 99999) AS i;

DO $$
DECLARE
    size int := current_setting('write_costs.batch')::int;
    day int := floor(extract(epoch FROM now()) / 86400)::int;
    -- Each table's insert of the rows $1 to $2 of `wc_text`.
    inserts text[][] := ARRAY[
        ['events', format(
            'INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, epoch)
             SELECT ''callback_task'', id, 1, ''MessageDelivered'', ''1'', payload::json, ''{}''::json, %s
             FROM wc_text WHERE i BETWEEN $1 AND $2', day)],
        ['task_streams', format(
            'INSERT INTO task_streams (task_id, epoch)
             SELECT id, %s FROM wc_text WHERE i BETWEEN $1 AND $2', day)],
        ['task_view',
            'INSERT INTO task_view (id, status, source_app, target_app, created_at, updated_at, doc, consumer_id,
                                    endpoint_host)
             SELECT id, ''delivered'', NULL, NULL, now(), now(), doc::json, ''c0123456789'', ''127.0.0.1''
             FROM wc_text WHERE i BETWEEN $1 AND $2']];
    started timestamptz;
    chunk int;
BEGIN
    FOR t IN 1..array_length(inserts, 1) LOOP
        started := clock_timestamp();
        FOR chunk IN 0..(100000 / size - 1) LOOP
            EXECUTE inserts[t][2] USING chunk * size, chunk * size + size - 1;
            COMMIT;
        END LOOP;
        INSERT INTO write_cost
        VALUES (inserts[t][1], (100000 / size) * size, extract(epoch FROM clock_timestamp() - started) * 1e6);
        COMMIT;
    END LOOP;
END $$;

SELECT tbl AS "table", round((micros / rows)::numeric, 1) AS "µs per row" FROM write_cost;
SELECT round(avg(octet_length(payload))) AS "event bytes", round(avg(octet_length(doc))) AS "list document bytes"
FROM wc_text;
