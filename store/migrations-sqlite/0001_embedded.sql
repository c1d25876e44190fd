-- The embedded store: the same tables as the Postgres store's migrations
-- leave behind, for one node. Times are microseconds since 1970 (INTEGER):
-- they sort as numbers, whatever the text format of a timestamp.
--
-- One writer at a time (SQLite's rule, and the group commit's), so events
-- become visible in `position` order: the feed needs no transaction ids.

CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    aggregate_type  TEXT NOT NULL,
    aggregate_id    TEXT NOT NULL,
    sequence        INTEGER NOT NULL,
    event_type      TEXT NOT NULL,
    event_version   TEXT NOT NULL,
    payload         TEXT NOT NULL,
    metadata        TEXT NOT NULL DEFAULT '{}',
    recorded_at     INTEGER NOT NULL,
    epoch           INTEGER NOT NULL DEFAULT 0,
    -- Optimistic concurrency: one writer wins each sequence number.
    UNIQUE (aggregate_type, aggregate_id, sequence)
);

CREATE INDEX events_api_key_hash ON events (json_extract(payload, '$.KeyIssued.issue.hash'))
    WHERE aggregate_type = 'api_key';

CREATE TABLE task_streams (
    task_id  TEXT PRIMARY KEY,
    epoch    INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE task_schedule (
    task_id     TEXT PRIMARY KEY,
    due_at      INTEGER NOT NULL,
    owner       TEXT,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX task_schedule_free ON task_schedule (due_at) WHERE owner IS NULL;
CREATE INDEX task_schedule_owned ON task_schedule (owner) WHERE owner IS NOT NULL;

CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    listen        TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    heartbeat_at  INTEGER NOT NULL,
    stopped_at    INTEGER,
    report        TEXT NOT NULL DEFAULT '{}'
) WITHOUT ROWID;

CREATE TABLE projection_checkpoints (
    name        TEXT PRIMARY KEY,
    position    INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE task_view (
    id             TEXT PRIMARY KEY,
    status         TEXT NOT NULL,
    source_app     TEXT,
    target_app     TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    doc            TEXT NOT NULL,
    consumer_id    TEXT,
    endpoint_host  TEXT
) WITHOUT ROWID;

CREATE INDEX task_view_created ON task_view (created_at DESC, id DESC);
CREATE INDEX task_view_status ON task_view (status, created_at DESC, id DESC) WHERE status <> 'delivered';
CREATE INDEX task_view_source_app ON task_view (source_app, created_at DESC, id DESC) WHERE source_app IS NOT NULL;
CREATE INDEX task_view_target_app ON task_view (target_app, created_at DESC, id DESC) WHERE target_app IS NOT NULL;
CREATE INDEX task_view_consumer ON task_view (consumer_id, created_at DESC, id DESC) WHERE consumer_id IS NOT NULL;
CREATE INDEX task_view_endpoint_host ON task_view (endpoint_host, created_at DESC, id DESC)
    WHERE status <> 'delivered';

CREATE TABLE task_counts (
    status      TEXT NOT NULL,
    source_app  TEXT NOT NULL,
    target_app  TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (status, source_app, target_app)
) WITHOUT ROWID;

CREATE TABLE consumer_counters (
    consumer_id      TEXT PRIMARY KEY,
    consumed         INTEGER NOT NULL DEFAULT 0,
    delivered        INTEGER NOT NULL DEFAULT 0,
    failed_attempts  INTEGER NOT NULL DEFAULT 0,
    timeouts         INTEGER NOT NULL DEFAULT 0,
    dead_lettered    INTEGER NOT NULL DEFAULT 0,
    retrying         INTEGER NOT NULL DEFAULT 0,
    dead             INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE consumer_runtime (
    consumer_id  TEXT NOT NULL,
    node_id      TEXT NOT NULL,
    state        TEXT NOT NULL,
    report       TEXT NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (consumer_id, node_id)
) WITHOUT ROWID;

CREATE TABLE stats_minute (
    minute          INTEGER NOT NULL,
    dimension       TEXT NOT NULL,
    key             TEXT NOT NULL,
    submitted       INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    delivered       INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    retried         INTEGER NOT NULL DEFAULT 0,
    timeouts        INTEGER NOT NULL DEFAULT 0,
    dead            INTEGER NOT NULL DEFAULT 0,
    latency_sum_ms  INTEGER NOT NULL DEFAULT 0,
    latency_max_ms  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dimension, key, minute)
) WITHOUT ROWID;

CREATE INDEX stats_minute_age ON stats_minute (minute);

CREATE TABLE api_key_usage (
    key_id        TEXT PRIMARY KEY,
    last_used_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE console_sessions (
    token_hash  TEXT PRIMARY KEY,
    username    TEXT NOT NULL,
    role        TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    client_ip   TEXT
) WITHOUT ROWID;

CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
CREATE INDEX console_sessions_username ON console_sessions (username);
