-- Read models, part 2: work queue settings, and what the work queue and
-- log pages of the API read quickly.

-- Work queues: the settings users give a queue (POST /work-queues). A queue
-- also exists without a row here, as soon as a deployment, a worker or a
-- River job names it.
CREATE TABLE work_queues (
    name              text        PRIMARY KEY,
    concurrency_limit integer     CHECK (concurrency_limit > 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE work_queues IS 'Settings of work queues, set with POST /api/v1/work-queues. Not a projection of the event log: replay leaves it alone. Whether a queue is paused is River''s river_queue.paused_at.';
COMMENT ON COLUMN work_queues.name IS 'The work queue (the River queue its task runs are jobs in).';
COMMENT ON COLUMN work_queues.concurrency_limit IS 'At most this many task runs of the queue run at once across all workers; NULL means no limit beyond each worker''s own concurrency.';
COMMENT ON COLUMN work_queues.created_at IS 'When the queue''s settings were first saved.';
COMMENT ON COLUMN work_queues.updated_at IS 'When the queue''s settings were last saved.';

-- The running attempts of each worker, for the workers shown with a queue.
CREATE INDEX task_run_attempts_running_idx ON task_run_attempts (worker) WHERE outcome = 'running';
COMMENT ON INDEX task_run_attempts_running_idx IS 'Running attempts by worker name: how many task runs each online worker runs (GET /work-queues).';

-- A plain view for people.
CREATE VIEW work_queue_status AS
WITH names AS (
    SELECT name FROM work_queues
    UNION SELECT name FROM river_queue
    UNION SELECT work_queue FROM deployments
    UNION SELECT unnest(queues) FROM worker_status WHERE online
)
SELECT n.name,
       (SELECT count(*) FROM river_job j
         WHERE j.queue = n.name AND j.kind = 'ordo.task_run'
           AND (j.state = 'available' OR j.state = 'scheduled' AND j.scheduled_at <= now())) AS depth,
       (SELECT count(*) FROM river_job j WHERE j.queue = n.name AND j.kind = 'ordo.task_run' AND j.state = 'running') AS running,
       q.paused_at IS NOT NULL AS paused,
       w.concurrency_limit,
       (SELECT count(*) FROM worker_status s WHERE s.online AND n.name = ANY (s.queues)) AS workers_online
FROM names n
LEFT JOIN work_queues w ON w.name = n.name
LEFT JOIN river_queue q ON q.name = n.name
ORDER BY n.name;
COMMENT ON VIEW work_queue_status IS 'Each work queue with its depth (task runs due and waiting for a worker), task runs running, whether it is paused, its concurrency limit and how many workers that take from it are online.';
