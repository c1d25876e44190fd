-- What storing event payloads and task list documents as jsonb costs against
-- json (migration 0005): run on a scratch database,
--   createdb -h 127.0.0.1 scratch && psql -h 127.0.0.1 -d scratch -f bench/sql/json_vs_jsonb.sql
-- Payloads are shaped like Bida's task events for a 512-byte message: a
-- TaskSubmitted of ~1.15 kB and an AttemptSucceeded of ~160 bytes.
\timing on
SET client_min_messages = warning;
DROP TABLE IF EXISTS src, eb, ej, tv, tvj, tv0;
CREATE TABLE src AS
SELECT gen_random_uuid()::text AS aggregate_id, s AS sequence,
       CASE s WHEN 1 THEN json_build_object('TaskSubmitted', json_build_object(
                'spec', json_build_object(
                    'origin', json_build_object('key', 'k', 'position', 'p', 'consumer_id', gen_random_uuid()::text),
                    'policy', json_build_object('expect', '{}'::json, 'retry_on', json_build_array('5xx', '408', '429'),
                                                'timeout_ms', 10000, 'max_attempts', 10),
                    'request', json_build_object('url', 'http://127.0.0.1:45349/receive', 'method', 'POST',
                                                 'body', json_build_object('text', json_build_object(
                                                     'pad', repeat('x', 452), 'sent_at_us', g, 'seq', g)::text)),
                    'message_id', 'rabbitmq:queue:b' || g),
                'due_at', now(), 'submitted_at', now()))::text
       ELSE json_build_object('AttemptSucceeded', json_build_object('attempt', json_build_object(
                'number', 1, 'latency_ms', 4, 'started_at', now(), 'status_code', 200,
                'response_excerpt', 'ok')))::text END AS payload
FROM generate_series(1, 30000) AS g, generate_series(1, 2) AS s;
CREATE TABLE eb (position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, aggregate_id text, sequence bigint,
                 payload jsonb, UNIQUE (aggregate_id, sequence));
CREATE TABLE ej (LIKE eb INCLUDING ALL);
ALTER TABLE ej ALTER COLUMN payload TYPE json;
\echo 60,000 events inserted as jsonb, then as json
INSERT INTO eb (aggregate_id, sequence, payload) SELECT aggregate_id, sequence, payload::jsonb FROM src;
INSERT INTO ej (aggregate_id, sequence, payload) SELECT aggregate_id, sequence, payload::json FROM src;
\echo read back as text: jsonb, json, jsonb without the body
SELECT sum(length(payload::text)) FROM eb;
SELECT sum(length(payload::text)) FROM ej;
SELECT sum(length((payload #- '{TaskSubmitted,spec,request,body}')::text)) FROM eb;

-- The task list: a ~600-byte document per task, with the list's indexes.
CREATE TABLE tv (id text PRIMARY KEY, status text NOT NULL, source_app text, target_app text,
                 created_at timestamptz NOT NULL, doc jsonb NOT NULL, consumer_id text);
CREATE INDEX ON tv (created_at DESC, id DESC);
CREATE INDEX ON tv (status, created_at DESC, id DESC);
CREATE INDEX ON tv (source_app, created_at DESC, id DESC);
CREATE INDEX ON tv (target_app, created_at DESC, id DESC);
CREATE INDEX ON tv (consumer_id, created_at DESC, id DESC) WHERE consumer_id IS NOT NULL;
CREATE TABLE tvj (LIKE tv INCLUDING ALL);
ALTER TABLE tvj ALTER COLUMN doc TYPE json;
CREATE TABLE tv0 (id text PRIMARY KEY, status text NOT NULL, source_app text, target_app text,
                  created_at timestamptz NOT NULL, doc jsonb NOT NULL, consumer_id text);
\echo 30,000 task list rows: jsonb with the indexes, json with the indexes, jsonb with the primary key only
INSERT INTO tv SELECT aggregate_id, 'delivered', 'bench', NULL, now(), payload::jsonb, 'c1' FROM src WHERE sequence = 2;
INSERT INTO tvj SELECT aggregate_id, 'delivered', 'bench', NULL, now(), payload::json, 'c1' FROM src WHERE sequence = 2;
INSERT INTO tv0 SELECT aggregate_id, 'delivered', 'bench', NULL, now(), payload::jsonb, 'c1' FROM src WHERE sequence = 2;
DROP TABLE src, eb, ej, tv, tvj, tv0;
