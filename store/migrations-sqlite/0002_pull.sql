-- Pull consumers: see migrations/0011_pull.up.sql. Times in microseconds.
ALTER TABLE task_schedule ADD COLUMN lane TEXT;
ALTER TABLE task_schedule ADD COLUMN lease_member TEXT;
ALTER TABLE task_schedule ADD COLUMN lease_id TEXT;
ALTER TABLE task_schedule ADD COLUMN leased_at INTEGER;

DROP INDEX task_schedule_free;
CREATE INDEX task_schedule_free ON task_schedule (due_at) WHERE owner IS NULL AND lane IS NULL;
CREATE INDEX task_schedule_lane ON task_schedule (lane, due_at) WHERE lane IS NOT NULL;
CREATE INDEX task_schedule_lease ON task_schedule (lease_id) WHERE lease_id IS NOT NULL;

CREATE TABLE pull_members (
    consumer_id     TEXT NOT NULL,
    member          TEXT NOT NULL,
    address         TEXT,
    client_version  TEXT,
    joined_at       INTEGER NOT NULL,
    heartbeat_at    INTEGER NOT NULL,
    acked           INTEGER NOT NULL DEFAULT 0,
    window_at       INTEGER NOT NULL,
    window_acked    INTEGER NOT NULL DEFAULT 0,
    previous_acked  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer_id, member)
) WITHOUT ROWID;
