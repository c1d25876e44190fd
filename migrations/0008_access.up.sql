-- Access control. Apps and API keys are aggregates in `events` like brokers;
-- a request's key is found by its SHA-256 through this index, without
-- folding every key.
CREATE INDEX events_api_key_hash ON events ((payload -> 'KeyIssued' -> 'issue' ->> 'hash'))
    WHERE aggregate_type = 'api_key';

-- When each key was last used: written at most once a minute per key and
-- node, not an event (it would be most of the event store's traffic).
CREATE TABLE api_key_usage (
    key_id        TEXT PRIMARY KEY,
    last_used_at  TIMESTAMPTZ NOT NULL
);
