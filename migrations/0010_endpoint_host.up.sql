-- The task list files each task by the host its requests go to, so that an
-- operator can list (and bulk-replay) the tasks of one endpoint. The task
-- list projection writes the column from the task's URL (`EndpointHost` in
-- domain/src/task/spec.rs: lowercase, IDNA-encoded, IPv6 in brackets); rows
-- written before it are filled here from the URL in their document, with the
-- same form for every ASCII host (a non-ASCII host stays as written until the
-- task changes again).
ALTER TABLE task_view ADD COLUMN endpoint_host TEXT;

UPDATE task_view
SET endpoint_host = lower(substring(doc ->> 'url' FROM '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?(\[[^]]*\]|[^:/?#]*)'));

CREATE INDEX task_view_endpoint_host ON task_view (endpoint_host, created_at DESC, id DESC);
