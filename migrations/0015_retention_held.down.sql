ALTER TABLE retention_log DROP COLUMN held_ms;
