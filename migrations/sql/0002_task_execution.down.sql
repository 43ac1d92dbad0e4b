DROP INDEX IF EXISTS river_job_ordo_due_idx;
DROP VIEW IF EXISTS worker_status;
DROP TABLE IF EXISTS workers;
DROP TABLE IF EXISTS task_run_logs;
DROP TABLE IF EXISTS flow_run_idempotency_keys;
DROP TABLE IF EXISTS flow_run_progress;
DROP TABLE IF EXISTS task_run_fanin;
