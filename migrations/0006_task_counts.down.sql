DROP TABLE IF EXISTS task_counts;
