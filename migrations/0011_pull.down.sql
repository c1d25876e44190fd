DROP TABLE IF EXISTS pull_members;
DROP INDEX IF EXISTS task_schedule_lease;
DROP INDEX IF EXISTS task_schedule_lane;
DROP INDEX task_schedule_free;
CREATE INDEX task_schedule_free ON task_schedule (due_at) WHERE owner IS NULL;
ALTER TABLE task_schedule
    DROP COLUMN leased_at,
    DROP COLUMN lease_id,
    DROP COLUMN lease_member,
    DROP COLUMN lane;
