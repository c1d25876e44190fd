-- Where Postgres's time goes while Bida drains a backlog: the statements'
-- execution time, calls, rows and WAL, from pg_stat_statements. The
-- extension must be loaded at server start, so this changes the server;
-- put it back afterwards (the last block).
--
--   psql -h 127.0.0.1 -U postgres -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
--   pg_ctlcluster --skip-systemctl-redirect 15 main restart
--   psql -h 127.0.0.1 -U postgres -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" \
--        -c "SELECT pg_stat_statements_reset()" -c "SELECT pg_stat_reset_shared('wal')"
--   target/release/bida-bench mq --broker kafka --messages 300000 --paced-seconds 3
--   psql -h 127.0.0.1 -U postgres -f bench/sql/statement_profile.sql
--
-- The bench's own rebuild folds every event a second time: the task list's
-- statements (task_view, the feed read) show twice a drain's share.
--
-- The UNLOGGED comparison in the README: while the same bench starts (its
-- database appears as bida_test_<id>, the task list still empty), run
--   psql -h 127.0.0.1 -U postgres -d bida_test_<id> -c "ALTER TABLE task_view SET UNLOGGED"
-- and compare the bench's "postgres CPU per 10k messages".
--
-- Afterwards:
--   psql -h 127.0.0.1 -U postgres -c "DROP EXTENSION pg_stat_statements" -c "ALTER SYSTEM RESET shared_preload_libraries"
--   pg_ctlcluster --skip-systemctl-redirect 15 main restart
SELECT round(total_exec_time::numeric / 1000, 2) AS exec_s,
       round((100 * total_exec_time / sum(total_exec_time) OVER ())::numeric, 1) AS pct,
       calls,
       rows,
       round(wal_bytes / 1e6) AS wal_mb,
       left(regexp_replace(query, '\s+', ' ', 'g'), 100) AS query
FROM pg_stat_statements
ORDER BY total_exec_time DESC
LIMIT 22;

-- Full-page images against all WAL: whether checkpoints are the cost.
SELECT wal_records, wal_fpi, pg_size_pretty(wal_bytes) AS wal FROM pg_stat_wal;
