-- Work queue concurrency limits (work_queues.concurrency_limit), held across
-- every worker: the write-side table of jobs/queueslots.go. Like the other
-- write-side tables it is not a source of truth for history.

CREATE TABLE work_queue_slots (
    task_run_id uuid        NOT NULL,
    attempt     integer     NOT NULL,
    queue       text        NOT NULL,
    job_id      bigint      NOT NULL UNIQUE,
    state       text        NOT NULL CHECK (state IN ('waiting', 'granted', 'held')),
    worker_id   uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_run_id, attempt),
    CHECK ((state = 'held') = (worker_id IS NOT NULL))
);
CREATE INDEX work_queue_slots_queue_idx ON work_queue_slots (queue, state, created_at);

COMMENT ON TABLE work_queue_slots IS 'Task run attempts of work queues that have a concurrency_limit: those that hold a slot (granted, held) and those that wait for one. A worker takes a slot in the transaction that records TaskRunStarted and frees it in the one that records the outcome. An attempt that finds no slot free records nothing in the log: its River job is completed and a new one, scheduled for later, carries the attempt; when a slot frees it is granted to the oldest waiting attempt and that job is made available at once. The reaper frees the slots of dead workers and of jobs that ended. Changed only while holding the queue''s work_queues row lock (FOR NO KEY UPDATE).';
COMMENT ON COLUMN work_queue_slots.task_run_id IS 'The task run.';
COMMENT ON COLUMN work_queue_slots.attempt IS 'The attempt number of the task run.';
COMMENT ON COLUMN work_queue_slots.queue IS 'The work queue (work_queues.name).';
COMMENT ON COLUMN work_queue_slots.job_id IS 'The River job (river_job.id) that carries the attempt now.';
COMMENT ON COLUMN work_queue_slots.state IS 'waiting: no slot was free, the job sleeps until one is granted to it (or it looks again after a while); granted: a slot freed and is kept for this job, which was woken and has not started yet; held: the attempt runs on worker_id. granted and held count against the limit.';
COMMENT ON COLUMN work_queue_slots.worker_id IS 'The worker (workers.id) running the attempt, when held.';
COMMENT ON COLUMN work_queue_slots.created_at IS 'When the attempt first asked for a slot: waiting attempts are granted slots in this order.';
COMMENT ON COLUMN work_queue_slots.updated_at IS 'When the row last changed.';

-- River jobs of a queue running without a slot row, fetched before the
-- queue's limit was last saved, are attempts started while the queue had no
-- limit: they count too, so that a limit set on a busy queue holds at once.
CREATE FUNCTION work_queue_slots_in_use(queue text, limit_saved_at timestamptz, exclude bigint[])
RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT (SELECT count(*) FROM work_queue_slots s WHERE s.queue = $1 AND s.state IN ('granted', 'held'))
         + (SELECT count(*) FROM river_job j
            WHERE j.state = 'running' AND j.queue = $1 AND j.kind = 'ordo.task_run'
              AND j.attempted_at < $2 AND j.id <> ALL (coalesce($3, '{}'))
              AND NOT EXISTS (SELECT 1 FROM work_queue_slots s WHERE s.job_id = j.id))
$$;
COMMENT ON FUNCTION work_queue_slots_in_use(text, timestamptz, bigint[]) IS 'Slots of a work queue in use: granted and held rows, plus the queue''s running task run jobs that hold no slot and were fetched before limit_saved_at (work_queues.updated_at), that is attempts started before the limit was set; jobs in exclude are not counted.';

CREATE VIEW work_queue_concurrency AS
SELECT w.name AS queue, w.concurrency_limit,
       work_queue_slots_in_use(w.name, w.updated_at, '{}') AS slots_in_use,
       (SELECT count(*) FROM work_queue_slots s WHERE s.queue = w.name AND s.state = 'waiting') AS waiting
FROM work_queues w
WHERE w.concurrency_limit IS NOT NULL;
COMMENT ON VIEW work_queue_concurrency IS 'Work queues with a concurrency limit, for people: the limit, the slots in use and how many task runs wait for one.';
