-- Consumers and brokers live in the event store (aggregates `consumer` and
-- `broker`). Nodes follow their changes through this notification, sent at
-- commit, and reconcile their consumer actors live.
CREATE FUNCTION bida_notify_config() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bida_config', NEW.aggregate_type || ':' || NEW.aggregate_id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_notify_config
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.aggregate_type IN ('broker', 'consumer'))
    EXECUTE FUNCTION bida_notify_config();

-- What each node's consumer actor reports about itself (state, lag, errors),
-- refreshed every few seconds; rows of silent nodes are ignored by readers.
CREATE TABLE consumer_runtime (
    consumer_id  TEXT NOT NULL,
    node_id      UUID NOT NULL,
    state        TEXT NOT NULL,
    report       JSONB NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_id, node_id)
);

-- Tasks remember the consumer they came from.
ALTER TABLE task_view ADD COLUMN consumer_id TEXT;
CREATE INDEX task_view_consumer ON task_view (consumer_id, created_at DESC, id DESC) WHERE consumer_id IS NOT NULL;

-- Per consumer, folded from task events by the task_list projection: running
-- totals, and how many of its tasks are retrying or dead right now.
CREATE TABLE consumer_counters (
    consumer_id      TEXT PRIMARY KEY,
    consumed         BIGINT NOT NULL DEFAULT 0,
    delivered        BIGINT NOT NULL DEFAULT 0,
    failed_attempts  BIGINT NOT NULL DEFAULT 0,
    timeouts         BIGINT NOT NULL DEFAULT 0,
    dead_lettered    BIGINT NOT NULL DEFAULT 0,
    retrying         BIGINT NOT NULL DEFAULT 0,
    dead             BIGINT NOT NULL DEFAULT 0
);
