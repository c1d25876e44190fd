-- When a node last published its consumer reports (see the Postgres
-- migration 0016): rows it did not rewrite are current as of this.
ALTER TABLE nodes ADD COLUMN reports_at INTEGER;
