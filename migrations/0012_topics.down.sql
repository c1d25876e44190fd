DROP TABLE topic_claims;
DROP TABLE topic_members;
DROP TABLE topic_offsets;
DROP TABLE topic_slices;
DROP TABLE topic_messages;
DROP TABLE topic_partitions;
DROP TABLE topic_logs;
