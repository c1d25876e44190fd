-- Pull consumers (issue 19). A pulled message is a task whose schedule row
-- sits in a lane (`lane`: the consumer's id in cluster mode, `consumer/member`
-- in broadcast mode) that only members' pulls claim, never a node's
-- scheduler. A pull leases the row to a member: `lease_id` is what the member
-- acks with, `due_at` the lease's end, after which the row is due again.
-- Every event the task records ends the lease (the writer clears it).
ALTER TABLE task_schedule
    ADD COLUMN lane TEXT,
    ADD COLUMN lease_member TEXT,
    ADD COLUMN lease_id UUID,
    ADD COLUMN leased_at TIMESTAMPTZ;

DROP INDEX task_schedule_free;
CREATE INDEX task_schedule_free ON task_schedule (due_at) WHERE owner IS NULL AND lane IS NULL;
CREATE INDEX task_schedule_lane ON task_schedule (lane, due_at) WHERE lane IS NOT NULL;
CREATE INDEX task_schedule_lease ON task_schedule (lease_id) WHERE lease_id IS NOT NULL;

-- The members of pull consumers: every pull and heartbeat refreshes its row.
-- Acks are counted in 10-second windows (the current and the one before) for
-- a rate every node reads the same.
CREATE TABLE pull_members (
    consumer_id     TEXT NOT NULL,
    member          TEXT NOT NULL,
    address         TEXT,
    client_version  TEXT,
    joined_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    acked           BIGINT NOT NULL DEFAULT 0,
    window_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    window_acked    BIGINT NOT NULL DEFAULT 0,
    previous_acked  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer_id, member)
);
