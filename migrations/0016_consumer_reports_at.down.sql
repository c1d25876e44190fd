ALTER TABLE nodes DROP COLUMN reports_at;
