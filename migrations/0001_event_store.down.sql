DROP TABLE IF EXISTS task_view;
DROP TABLE IF EXISTS projection_checkpoints;
DROP TABLE IF EXISTS nodes;
DROP TABLE IF EXISTS task_schedule;
DROP TABLE IF EXISTS events;
