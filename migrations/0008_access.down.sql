DROP TABLE api_key_usage;
DROP INDEX events_api_key_hash;
