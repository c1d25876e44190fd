-- Built-in topics: see migrations/0012_topics.up.sql. Times in microseconds.
--
-- Messages live in one table per (topic's log, slice) made on demand,
-- `topic_messages_<log_id>_<yyyymmddhh>` (see src/sqlite/topics.rs), listed
-- in `topic_slices`; retention drops whole tables, never rows one by one.

-- AUTOINCREMENT: a log id is never given twice, so a topic deleted and
-- created again never meets its old slices' tables.
CREATE TABLE topic_logs (
    log_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    topic           TEXT NOT NULL UNIQUE,
    partitions      INTEGER NOT NULL,
    retention_ms    INTEGER NOT NULL,
    -- The width of its slices: an hour, or a day for retentions of two days on.
    slice_ms        INTEGER NOT NULL
);

CREATE TABLE topic_partitions (
    log_id          INTEGER NOT NULL,
    partition       INTEGER NOT NULL,
    next_offset     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (log_id, partition)
) WITHOUT ROWID;

CREATE TABLE topic_slices (
    log_id          INTEGER NOT NULL,
    slice_start     INTEGER NOT NULL,
    table_name      TEXT NOT NULL,
    PRIMARY KEY (log_id, slice_start)
) WITHOUT ROWID;

CREATE TABLE topic_offsets (
    group_id        TEXT NOT NULL,
    topic           TEXT NOT NULL,
    partition       INTEGER NOT NULL,
    next_offset     INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
) WITHOUT ROWID;

CREATE INDEX topic_offsets_topic ON topic_offsets (topic);

CREATE TABLE topic_members (
    group_id        TEXT NOT NULL,
    topic           TEXT NOT NULL,
    member          TEXT NOT NULL,
    seen_at         INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, member)
) WITHOUT ROWID;

CREATE INDEX topic_members_topic ON topic_members (topic);

CREATE TABLE topic_claims (
    group_id        TEXT NOT NULL,
    topic           TEXT NOT NULL,
    partition       INTEGER NOT NULL,
    member          TEXT NOT NULL,
    claimed_at      INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
) WITHOUT ROWID;

CREATE INDEX topic_claims_topic ON topic_claims (topic);
