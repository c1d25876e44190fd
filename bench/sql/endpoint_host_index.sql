-- What the endpoint-host index costs each task-list row (migration 0010):
-- 30,000 rows of a filled store (bench/sql/million_tasks.sql) inserted six
-- times into a copy of task_view with every index, and into one without the
-- endpoint-host index. Run on a migrated, filled database:
--
--   psql -d bida_million -f bench/sql/endpoint_host_index.sql
--
-- Measured 2026-12-03 on a 2-core machine with the index as a full one:
-- median 735 ms with it, 503 ms without (about 8 µs a row); hence its
-- `WHERE status <> 'delivered'`. With the migration's partial index, the
-- same rows (mostly delivered) cost what they cost without it.
\timing off
CREATE TEMP TABLE sample AS SELECT * FROM task_view ORDER BY random() LIMIT 30000;
CREATE TABLE bench_with (LIKE task_view INCLUDING ALL);
CREATE TABLE bench_without (LIKE task_view INCLUDING ALL);
SELECT indexname FROM pg_indexes WHERE tablename = 'bench_without' AND indexdef LIKE '%endpoint_host%' \gset
DROP INDEX :indexname;
TRUNCATE bench_with; TRUNCATE bench_without; CHECKPOINT;
\timing on
\echo with the endpoint-host index
INSERT INTO bench_with SELECT * FROM sample;
\echo without
INSERT INTO bench_without SELECT * FROM sample;
\timing off
TRUNCATE bench_with; TRUNCATE bench_without; CHECKPOINT;
\timing on
\echo with the endpoint-host index
INSERT INTO bench_with SELECT * FROM sample;
\echo without
INSERT INTO bench_without SELECT * FROM sample;
\timing off
TRUNCATE bench_with; TRUNCATE bench_without; CHECKPOINT;
\timing on
\echo with the endpoint-host index
INSERT INTO bench_with SELECT * FROM sample;
\echo without
INSERT INTO bench_without SELECT * FROM sample;
\timing off
TRUNCATE bench_with; TRUNCATE bench_without; CHECKPOINT;
\timing on
\echo with the endpoint-host index
INSERT INTO bench_with SELECT * FROM sample;
\echo without
INSERT INTO bench_without SELECT * FROM sample;
\timing off
TRUNCATE bench_with; TRUNCATE bench_without; CHECKPOINT;
\timing on
\echo with the endpoint-host index
INSERT INTO bench_with SELECT * FROM sample;
\echo without
INSERT INTO bench_without SELECT * FROM sample;
\timing off
TRUNCATE bench_with; TRUNCATE bench_without; CHECKPOINT;
\timing on
\echo with the endpoint-host index
INSERT INTO bench_with SELECT * FROM sample;
\echo without
INSERT INTO bench_without SELECT * FROM sample;
\timing off
DROP TABLE bench_with, bench_without;
