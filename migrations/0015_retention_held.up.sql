-- How long a pass held appends back (from its request for the lock on
-- `events` to its commit): the pause that writers saw. NULL for passes of
-- versions that did not measure it.
ALTER TABLE retention_log ADD COLUMN held_ms BIGINT;
