-- Retention: a day of finished tasks is dropped as a whole partition, not
-- deleted row by row.
--
-- `events` is partitioned by `epoch`: for a task, the UTC day (days since
-- 1970-01-01) it was submitted on; every event of a task carries the same
-- epoch. Every other aggregate (consumers, brokers) and every event written
-- before this migration has epoch 0 and lives in `events_durable`, which
-- retention never touches. Day partitions are created ahead of time by
-- `bida_events_partition`; `events_default` catches a day that was missed.
--
-- Per-partition unique constraints cannot see other days, so a task id could be
-- submitted twice on two days (a message redelivered across midnight, an
-- Idempotency-Key sent again tomorrow). `task_streams` holds one small row per
-- task, written with its first event: its primary key keeps task ids unique
-- and it tells which partition a task lives in.
--
-- Retention itself (store/src/retention.rs) copies the few tasks of an expired
-- day that are still live into a fresh partition, then drops or detaches the
-- old one; only the small `task_streams` and `task_view` rows are deleted one
-- by one.

DROP TRIGGER events_notify_config ON events;
DROP INDEX events_catch_up;
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events DROP CONSTRAINT events_aggregate_sequence;
ALTER TABLE events ALTER COLUMN position DROP IDENTITY;
ALTER TABLE events ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events RENAME TO events_durable;

CREATE TABLE events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY,
    transaction_id  XID8 NOT NULL DEFAULT pg_current_xact_id(),
    aggregate_type  TEXT NOT NULL,
    aggregate_id    TEXT NOT NULL,
    sequence        BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    event_version   TEXT NOT NULL,
    payload         JSONB NOT NULL,
    metadata        JSONB NOT NULL DEFAULT '{}',
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    epoch           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (position, epoch),
    -- Optimistic concurrency: one writer wins each sequence number.
    CONSTRAINT events_aggregate_sequence UNIQUE (aggregate_type, aggregate_id, sequence, epoch)
) PARTITION BY RANGE (epoch);

CREATE INDEX events_catch_up ON events (transaction_id, position);

SELECT setval(pg_get_serial_sequence('events', 'position'),
              COALESCE((SELECT max(position) FROM events_durable), 0) + 1, false);

ALTER TABLE events_durable ADD CONSTRAINT events_durable_epoch CHECK (epoch < 1);
ALTER TABLE events ATTACH PARTITION events_durable FOR VALUES FROM (MINVALUE) TO (1);
ALTER INDEX events_durable_aggregate_type_aggregate_id_sequence_epoch_key
    RENAME TO events_durable_aggregate_sequence;

CREATE TABLE events_default PARTITION OF events DEFAULT;
ALTER INDEX events_default_aggregate_type_aggregate_id_sequence_epoch_key
    RENAME TO events_default_aggregate_sequence;

CREATE TRIGGER events_notify_config
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.aggregate_type IN ('broker', 'consumer'))
    EXECUTE FUNCTION bida_notify_config();

-- The partition of one day, created (standalone, then attached, so that
-- appends to other days are not blocked) if it does not exist yet.
CREATE FUNCTION bida_events_partition(day INTEGER) RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    name TEXT := 'events_' || to_char(DATE '1970-01-01' + day, 'YYYYMMDD');
BEGIN
    IF day < 1 THEN
        RAISE EXCEPTION 'day partitions start at epoch 1, not %', day;
    END IF;
    IF to_regclass(name) IS NOT NULL THEN
        RETURN name;
    END IF;
    -- Nodes starting together would race to create the same day.
    PERFORM pg_advisory_xact_lock(hashtext('bida_events_partition'));
    IF to_regclass(name) IS NOT NULL THEN
        RETURN name;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE events INCLUDING DEFAULTS)', name);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I PRIMARY KEY (position, epoch),
                        ADD CONSTRAINT %I UNIQUE (aggregate_type, aggregate_id, sequence, epoch),
                        ADD CONSTRAINT %I CHECK (epoch >= %s AND epoch < %s)',
                   name, name || '_pkey', name || '_aggregate_sequence', name || '_epoch', day, day + 1);
    EXECUTE format('CREATE INDEX %I ON %I (transaction_id, position)', name || '_catch_up', name);
    EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)', name, day, day + 1);
    RETURN name;
END;
$$;

SELECT bida_events_partition(d)
FROM generate_series(floor(extract(epoch FROM now()) / 86400)::int - 1, floor(extract(epoch FROM now()) / 86400)::int + 2) AS d;

CREATE TABLE task_streams (
    task_id  TEXT PRIMARY KEY,
    epoch    INTEGER NOT NULL
);

CREATE INDEX task_streams_epoch ON task_streams (epoch);

INSERT INTO task_streams (task_id, epoch)
SELECT aggregate_id, 0 FROM events WHERE aggregate_type = 'task' AND sequence = 1;

-- What retention did, one row per pass over a day.
CREATE TABLE retention_log (
    day             DATE NOT NULL,
    ran_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    action          TEXT NOT NULL,
    dropped_tasks   BIGINT NOT NULL,
    kept_tasks      BIGINT NOT NULL,
    dropped_events  BIGINT NOT NULL,
    dropped_bytes   BIGINT NOT NULL,
    archived_as     TEXT
);
