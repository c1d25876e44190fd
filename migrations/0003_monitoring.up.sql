-- Per-minute statistics, folded from task events by the task_list projection.
-- One row per minute and dimension value: `dimension` is `all` (key ''),
-- `consumer`, `source_app`, `target_app` or `endpoint` (scheme://host:port).
-- Rows older than the retention (7 days by default) are pruned.
CREATE TABLE stats_minute (
    minute          TIMESTAMPTZ NOT NULL,
    dimension       TEXT NOT NULL,
    key             TEXT NOT NULL,
    submitted       BIGINT NOT NULL DEFAULT 0,
    attempts        BIGINT NOT NULL DEFAULT 0,
    delivered       BIGINT NOT NULL DEFAULT 0,
    failed          BIGINT NOT NULL DEFAULT 0,
    retried         BIGINT NOT NULL DEFAULT 0,
    timeouts        BIGINT NOT NULL DEFAULT 0,
    dead            BIGINT NOT NULL DEFAULT 0,
    latency_sum_ms  BIGINT NOT NULL DEFAULT 0,
    latency_max_ms  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (dimension, key, minute)
);

CREATE INDEX stats_minute_age ON stats_minute (minute);

-- What each node reports about itself with its heartbeat.
ALTER TABLE nodes ADD COLUMN report JSONB NOT NULL DEFAULT '{}';
