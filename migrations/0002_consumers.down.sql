DROP TABLE IF EXISTS consumer_counters;
DROP INDEX IF EXISTS task_view_consumer;
ALTER TABLE task_view DROP COLUMN IF EXISTS consumer_id;
DROP TABLE IF EXISTS consumer_runtime;
DROP TRIGGER IF EXISTS events_notify_config ON events;
DROP FUNCTION IF EXISTS bida_notify_config();
