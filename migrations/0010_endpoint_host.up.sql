-- The task list files each task by the host its requests go to, so that an
-- operator can list (and bulk-replay) the tasks of one endpoint. The task
-- list projection writes the column from the task's URL (`EndpointHost` in
-- domain/src/task/spec.rs: lowercase, IDNA-encoded, IPv6 in brackets); rows
-- written before it are filled here from the URL in their document, with the
-- same form for every ASCII host (a non-ASCII host stays as written until the
-- task changes again). About 50 s per million rows on a 2-core machine.
ALTER TABLE task_view ADD COLUMN endpoint_host TEXT;

UPDATE task_view
SET endpoint_host = lower(substring(doc ->> 'url' FROM '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?(\[[^]]*\]|[^:/?#]*)'));

-- Like the status index (0007), it leaves delivered tasks out: they are most
-- rows (every consumed message that succeeds at once), and an entry for each
-- cost Postgres about 8 µs per task (30,000 rows inserted in a median 735 ms
-- with a full index, 503 ms without). A host filter with a status other than
-- delivered (dead letters, retries: what an operator looks for and replays)
-- is served by this index; one on delivered tasks reads the list newest
-- first (README, "Console": up to ~0.6 s at a million tasks for a host with
-- few tasks).
CREATE INDEX task_view_endpoint_host ON task_view (endpoint_host, created_at DESC, id DESC)
    WHERE status <> 'delivered';
