DROP FUNCTION IF EXISTS bida_payload_without(json, text[]);

ALTER TABLE task_view ALTER COLUMN doc TYPE jsonb USING doc::jsonb;

ALTER TABLE events
    ALTER COLUMN payload TYPE jsonb USING payload::jsonb,
    ALTER COLUMN metadata DROP DEFAULT,
    ALTER COLUMN metadata TYPE jsonb USING metadata::jsonb,
    ALTER COLUMN metadata SET DEFAULT '{}';
