DROP VIEW IF EXISTS work_queue_status;
DROP INDEX IF EXISTS task_run_attempts_running_idx;
DROP TABLE IF EXISTS work_queues;
