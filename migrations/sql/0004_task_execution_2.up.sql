-- Task execution, part 2: the result cache, crash detection of workers, and
-- the counts that decide how a flow run ends.

-- The result cache: write side, filled when a task with a cache key
-- completes, read before a task runs.
CREATE TABLE task_cache (
    cache_key   text        PRIMARY KEY,
    task_run_id uuid        NOT NULL,
    result      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz
);
CREATE INDEX task_cache_expires_at_idx ON task_cache (expires_at) WHERE expires_at IS NOT NULL;

COMMENT ON TABLE task_cache IS 'Cached task results: for each cache key, the last task run that completed with it. A task run whose cache key is here and not expired completes as Cached with this result, without running (unless its cache policy says refresh). Written in the same transaction as the TaskRunCompleted event; the log stays the record of what happened.';
COMMENT ON COLUMN task_cache.cache_key IS 'The key: a SHA-256 of the task, parameters and inputs (key: inputs), or the task name and the rendered template.';
COMMENT ON COLUMN task_cache.task_run_id IS 'The task run whose result is cached.';
COMMENT ON COLUMN task_cache.result IS 'Its result (JSON); NULL when it returned none.';
COMMENT ON COLUMN task_cache.created_at IS 'When the result was stored.';
COMMENT ON COLUMN task_cache.expires_at IS 'When the entry stops being used (created_at + expiration_seconds); NULL means never. The reaper deletes expired entries.';

-- How a flow run ends depends on how its task runs ended.
ALTER TABLE flow_run_progress
    ADD COLUMN task_runs_crashed   integer NOT NULL DEFAULT 0 CHECK (task_runs_crashed >= 0),
    ADD COLUMN task_runs_cancelled integer NOT NULL DEFAULT 0 CHECK (task_runs_cancelled >= 0);
COMMENT ON COLUMN flow_run_progress.task_runs_crashed IS 'Task runs that crashed for good (their worker died and no retry was left). A run with crashed and no failed task runs ends CRASHED.';
COMMENT ON COLUMN flow_run_progress.task_runs_cancelled IS 'Task runs that were cancelled, including those that never ran because an upstream task did not complete.';

-- Crash detection: the reaper declares a worker dead when its heartbeat is
-- too old, and records its running attempts as crashed.
ALTER TABLE workers ADD COLUMN dead_at timestamptz;
COMMENT ON COLUMN workers.dead_at IS 'When the reaper declared the worker dead because its heartbeat stopped; its running attempts were then recorded as crashed. Cleared if the worker comes back (its late results are refused).';

CREATE OR REPLACE VIEW worker_status AS
SELECT name, queues, hostname, pid, started_at, last_heartbeat_at, stopped_at,
       stopped_at IS NULL AND dead_at IS NULL AND last_heartbeat_at > now() - interval '30 seconds' AS online,
       dead_at
FROM workers
ORDER BY started_at DESC;
COMMENT ON VIEW worker_status IS 'Workers for people: online is true when the worker has not stopped, was not declared dead, and sent a heartbeat in the last 30 seconds.';

-- Cancelling a run cancels its queued jobs: find them by flow run.
CREATE INDEX river_job_ordo_flow_run_idx ON river_job ((args ->> 'flow_run_id'))
    WHERE kind = 'ordo.task_run' AND state IN ('available', 'scheduled', 'retryable', 'pending');
COMMENT ON INDEX river_job_ordo_flow_run_idx IS 'Ordo: queued ordo.task_run jobs by flow run id, so that cancelling a run cancels its queued jobs in the same transaction without scanning River''s jobs.';
