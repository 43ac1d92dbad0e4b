DROP INDEX IF EXISTS river_job_ordo_flow_run_idx;
DROP VIEW IF EXISTS worker_status;
CREATE VIEW worker_status AS
SELECT name, queues, hostname, pid, started_at, last_heartbeat_at, stopped_at,
       stopped_at IS NULL AND last_heartbeat_at > now() - interval '30 seconds' AS online
FROM workers
ORDER BY started_at DESC;
COMMENT ON VIEW worker_status IS 'Workers for people: online is true when the worker has not stopped and sent a heartbeat in the last 30 seconds.';
ALTER TABLE workers DROP COLUMN IF EXISTS dead_at;
ALTER TABLE flow_run_progress DROP COLUMN IF EXISTS task_runs_cancelled, DROP COLUMN IF EXISTS task_runs_crashed;
DROP TABLE IF EXISTS task_cache;
