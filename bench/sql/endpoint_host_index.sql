-- What the endpoint-host index costs each task-list row (migration 0010):
-- 30,000 rows of a filled store (bench/sql/million_tasks.sql) inserted six
-- times into a copy of task_view with every index, and into one without the
-- endpoint-host index (in one transaction: no checkpoint between runs). Run
-- on a migrated, filled database:
--
--   psql -d bida_million -f bench/sql/endpoint_host_index.sql
--
-- Measured 2026-12-03 on a 2-core machine with the index as a full one:
-- median 735 ms with it, 503 ms without (about 8 µs a row); hence its
-- `WHERE status <> 'delivered'`: with the migration's partial index only a
-- store's non-delivered rows pay for it.
\timing off
CREATE TEMP TABLE sample AS SELECT * FROM task_view ORDER BY random() LIMIT 30000;
CREATE TABLE bench_with (LIKE task_view INCLUDING ALL);
CREATE TABLE bench_without (LIKE task_view INCLUDING ALL);
SELECT indexname FROM pg_indexes WHERE tablename = 'bench_without' AND indexdef LIKE '%endpoint_host%' \gset
DROP INDEX :indexname;
DO $$
DECLARE
    started timestamptz;
BEGIN
    FOR run IN 1..6 LOOP
        TRUNCATE bench_with;
        TRUNCATE bench_without;
        started := clock_timestamp();
        INSERT INTO bench_with SELECT * FROM sample;
        RAISE NOTICE 'run %: with the endpoint-host index % ms', run,
            round(extract(epoch FROM clock_timestamp() - started) * 1000);
        started := clock_timestamp();
        INSERT INTO bench_without SELECT * FROM sample;
        RAISE NOTICE 'run %: without it % ms', run,
            round(extract(epoch FROM clock_timestamp() - started) * 1000);
    END LOOP;
END
$$;
DROP TABLE bench_with, bench_without;
