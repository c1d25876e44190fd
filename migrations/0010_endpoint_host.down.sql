DROP INDEX task_view_endpoint_host;
ALTER TABLE task_view DROP COLUMN endpoint_host;
