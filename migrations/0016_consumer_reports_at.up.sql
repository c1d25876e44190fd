-- When a node last published its consumer reports. A report row is current
-- while its node confirms it: the node rewrites only the rows that changed
-- (at rest, none) and stamps this column on every publish, where it used to
-- rewrite every row every 2 s (1,000 idle consumers cost Postgres a fifth
-- of a core for that alone).
ALTER TABLE nodes ADD COLUMN reports_at TIMESTAMPTZ;
