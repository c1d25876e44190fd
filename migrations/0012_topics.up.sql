-- Built-in topics (issue 20): Bida's own message log. A topic's log has a
-- `log_id` of its own (a topic deleted and created again starts afresh);
-- `topic_partitions` gives each partition's next offset under a row lock,
-- so publishers on one partition commit in offset order and a reader never
-- sees an offset before one below it.
CREATE TABLE topic_logs (
    topic           TEXT PRIMARY KEY,
    log_id          BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    partitions      INTEGER NOT NULL,
    retention_ms    BIGINT NOT NULL,
    -- The width of its slices: an hour, or a day for retentions of two days on.
    slice_ms        BIGINT NOT NULL
);

CREATE TABLE topic_partitions (
    log_id          BIGINT NOT NULL,
    partition       INTEGER NOT NULL,
    next_offset     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (log_id, partition)
);

-- Messages: one list partition per topic's log, itself sliced by publish
-- time; retention drops whole slices (DROP TABLE), never rows one by one.
CREATE TABLE topic_messages (
    log_id          BIGINT NOT NULL,
    partition       INTEGER NOT NULL,
    "offset"        BIGINT NOT NULL,
    id              UUID NOT NULL,
    key             TEXT,
    headers         JSONB NOT NULL DEFAULT '{}',
    content_type    TEXT,
    body            BYTEA NOT NULL,
    app             TEXT,
    published_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (log_id, partition, "offset", published_at)
) PARTITION BY LIST (log_id);

CREATE INDEX topic_messages_time ON topic_messages (log_id, published_at);
CREATE INDEX topic_messages_id ON topic_messages (log_id, id);
CREATE INDEX topic_messages_key ON topic_messages (log_id, key, published_at) WHERE key IS NOT NULL;

-- Each slice that exists, for retention to find without reading the catalog.
CREATE TABLE topic_slices (
    log_id          BIGINT NOT NULL,
    slice_start     TIMESTAMPTZ NOT NULL,
    table_name      TEXT NOT NULL,
    PRIMARY KEY (log_id, slice_start)
);

-- Subscriptions' positions: the next offset to read, by partition.
CREATE TABLE topic_offsets (
    group_id        TEXT NOT NULL,
    topic           TEXT NOT NULL,
    partition       INTEGER NOT NULL,
    next_offset     BIGINT NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);

-- The nodes reading a subscription, and which partition each reads: a
-- partition is read by one member at a time; a member silent for longer
-- than its group's timeout leaves its partitions to the others.
CREATE TABLE topic_members (
    group_id        TEXT NOT NULL,
    topic           TEXT NOT NULL,
    member          TEXT NOT NULL,
    seen_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, member)
);

CREATE TABLE topic_claims (
    group_id        TEXT NOT NULL,
    topic           TEXT NOT NULL,
    partition       INTEGER NOT NULL,
    member          TEXT NOT NULL,
    claimed_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
