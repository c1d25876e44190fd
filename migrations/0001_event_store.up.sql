-- The event store: every state change of every aggregate, append-only.
--
-- `position` orders events globally, but positions are taken before commit, so
-- under concurrency a lower position can become visible after a higher one.
-- Catch-up readers therefore follow (transaction_id, position) and only read
-- transactions older than the oldest one still running
-- (pg_snapshot_xmin(pg_current_snapshot())), which never skips an event.
CREATE TABLE events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  XID8 NOT NULL DEFAULT pg_current_xact_id(),
    aggregate_type  TEXT NOT NULL,
    aggregate_id    TEXT NOT NULL,
    sequence        BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    event_version   TEXT NOT NULL,
    payload         JSONB NOT NULL,
    metadata        JSONB NOT NULL DEFAULT '{}',
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Optimistic concurrency: one writer wins each sequence number.
    CONSTRAINT events_aggregate_sequence UNIQUE (aggregate_type, aggregate_id, sequence)
);

CREATE INDEX events_catch_up ON events (transaction_id, position);

-- The durable schedule: one row per task that still has an attempt to make,
-- kept in the same statement as the task's events. `owner` is the node that
-- holds the task in memory (NULL: free for any node's scheduler to claim).
CREATE TABLE task_schedule (
    task_id     TEXT PRIMARY KEY,
    due_at      TIMESTAMPTZ NOT NULL,
    owner       UUID,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX task_schedule_free ON task_schedule (due_at) WHERE owner IS NULL;
CREATE INDEX task_schedule_owned ON task_schedule (owner) WHERE owner IS NOT NULL;

-- Bida processes sharing this database; a node whose heartbeat is stale loses
-- the tasks it held.
CREATE TABLE nodes (
    id            UUID PRIMARY KEY,
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    listen        TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at    TIMESTAMPTZ
);

-- How far each catch-up reader (projection, notifier) has read.
CREATE TABLE projection_checkpoints (
    name            TEXT PRIMARY KEY,
    transaction_id  XID8 NOT NULL DEFAULT '0',
    position        BIGINT NOT NULL DEFAULT 0,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Read model: one row per task, for lists and filters.
CREATE TABLE task_view (
    id          TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    source_app  TEXT,
    target_app  TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    doc         JSONB NOT NULL
);

CREATE INDEX task_view_created ON task_view (created_at DESC, id DESC);
CREATE INDEX task_view_status ON task_view (status, created_at DESC, id DESC);
CREATE INDEX task_view_source_app ON task_view (source_app, created_at DESC, id DESC);
CREATE INDEX task_view_target_app ON task_view (target_app, created_at DESC, id DESC);
