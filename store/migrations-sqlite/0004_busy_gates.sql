-- Which delivery gates each node found busy lately (see the Postgres
-- migration 0013).
ALTER TABLE nodes ADD COLUMN busy_gates TEXT NOT NULL DEFAULT '[]';
