-- Console sessions: a browser's login. Users themselves are aggregates in
-- `events` (`console_user`); a session is short-lived state, not history.
-- Only the SHA-256 of the session's cookie is kept.
CREATE TABLE console_sessions (
    token_hash  TEXT PRIMARY KEY,
    username    TEXT NOT NULL,
    role        TEXT NOT NULL,
    -- Forms and scripted requests carry it; a cookie alone cannot.
    csrf        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    client_ip   TEXT
);
CREATE INDEX console_sessions_username ON console_sessions (username);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
