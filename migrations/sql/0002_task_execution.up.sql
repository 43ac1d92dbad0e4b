-- Task execution: the write-side tables that the workers keep next to the
-- event log. None of them is a source of truth for history (the log is);
-- they hold what a command needs to decide quickly without replaying or
-- fighting over one stream: fan-in counts, per-run progress, idempotency
-- keys. Logs and worker heartbeats live here too, outside the event log.

-- Fan-in bookkeeping: one row per task run that depends on other tasks.
CREATE TABLE task_run_fanin (
    task_run_id uuid    PRIMARY KEY,
    flow_run_id uuid    NOT NULL,
    remaining   integer NOT NULL CHECK (remaining >= 0),
    cancelled   boolean NOT NULL DEFAULT false
);
CREATE INDEX task_run_fanin_flow_run_id_idx ON task_run_fanin (flow_run_id);

COMMENT ON TABLE task_run_fanin IS 'Fan-in counts: for each task run with upstream tasks, how many of them have not completed yet. A completing task decrements its downstream rows in the same transaction as its events; a row reaching 0 is queued then. Each task run has its own row, so parallel completions do not fight over one row or stream.';
COMMENT ON COLUMN task_run_fanin.task_run_id IS 'The downstream task run.';
COMMENT ON COLUMN task_run_fanin.flow_run_id IS 'Its flow run.';
COMMENT ON COLUMN task_run_fanin.remaining IS 'Upstream task runs not completed yet; 0 once the task run was queued.';
COMMENT ON COLUMN task_run_fanin.cancelled IS 'True once an upstream task failed for good and this task run was cancelled as not run; it is never queued then.';

-- Progress of each flow run: the one row per run that finishing tasks touch,
-- once per committed batch.
CREATE TABLE flow_run_progress (
    flow_run_id          uuid        PRIMARY KEY,
    task_runs_total      integer     NOT NULL CHECK (task_runs_total > 0),
    task_runs_unfinished integer     NOT NULL CHECK (task_runs_unfinished >= 0),
    task_runs_failed     integer     NOT NULL DEFAULT 0 CHECK (task_runs_failed >= 0),
    failure              text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE flow_run_progress IS 'Progress of each flow run, kept by the workers: how many task runs are not finished yet. The transaction that brings task_runs_unfinished to 0 ends the flow run. Updated once per committed batch of task results, since it is one hot row per run.';
COMMENT ON COLUMN flow_run_progress.flow_run_id IS 'The flow run.';
COMMENT ON COLUMN flow_run_progress.task_runs_total IS 'Task runs of the flow run.';
COMMENT ON COLUMN flow_run_progress.task_runs_unfinished IS 'Task runs not yet completed, failed for good or cancelled.';
COMMENT ON COLUMN flow_run_progress.task_runs_failed IS 'Task runs that failed for good.';
COMMENT ON COLUMN flow_run_progress.failure IS 'Why the first failed task run failed: the flow run''s failure message.';
COMMENT ON COLUMN flow_run_progress.created_at IS 'When the flow run was created.';
COMMENT ON COLUMN flow_run_progress.updated_at IS 'When a task run of the flow run last finished.';

-- Idempotency keys of run creation.
CREATE TABLE flow_run_idempotency_keys (
    deployment_id   uuid        NOT NULL,
    idempotency_key text        NOT NULL,
    flow_run_id     uuid        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment_id, idempotency_key)
);

COMMENT ON TABLE flow_run_idempotency_keys IS 'Idempotency keys given when creating runs: a create repeated with the same key for the same deployment returns the run the first one created.';
COMMENT ON COLUMN flow_run_idempotency_keys.deployment_id IS 'The deployment the run belongs to (the nil uuid for runs without one).';
COMMENT ON COLUMN flow_run_idempotency_keys.idempotency_key IS 'The key the client chose.';
COMMENT ON COLUMN flow_run_idempotency_keys.flow_run_id IS 'The run the first create with this key made.';
COMMENT ON COLUMN flow_run_idempotency_keys.created_at IS 'When the key was first used.';

-- Task logs: every line a task printed. Not events: they are many, and they
-- change no state.
CREATE TABLE task_run_logs (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_run_id uuid        NOT NULL,
    flow_run_id uuid        NOT NULL,
    attempt     integer     NOT NULL,
    ts          timestamptz NOT NULL,
    stream      text        NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
    level       text,
    line        text        NOT NULL
);
CREATE INDEX task_run_logs_flow_run_id_idx ON task_run_logs (flow_run_id, id);
CREATE INDEX task_run_logs_task_run_id_idx ON task_run_logs (task_run_id, id);

COMMENT ON TABLE task_run_logs IS 'Log lines of task runs: each line a command task wrote on stdout or stderr, lines logged by Go handlers, and lines the worker adds about each attempt (system). Written in batches by the worker; after each batch the worker sends NOTIFY ordo_logs with the flow run id, for live streaming.';
COMMENT ON COLUMN task_run_logs.id IS 'Increases with every stored line: readers page and follow by id.';
COMMENT ON COLUMN task_run_logs.task_run_id IS 'The task run that wrote the line.';
COMMENT ON COLUMN task_run_logs.flow_run_id IS 'Its flow run.';
COMMENT ON COLUMN task_run_logs.attempt IS 'The attempt of the task run that wrote the line (1 for the first).';
COMMENT ON COLUMN task_run_logs.ts IS 'When the worker read the line.';
COMMENT ON COLUMN task_run_logs.stream IS 'stdout or stderr of a command task (a Go handler''s logger writes to stdout), or system for the worker''s own lines about the attempt (started, exit status, timeout).';
COMMENT ON COLUMN task_run_logs.level IS 'Log level (DEBUG, INFO, WARN, ERROR) of lines from Go handlers and of system lines; NULL for process output.';
COMMENT ON COLUMN task_run_logs.line IS 'The line, without its newline; valid UTF-8, at most 64 KiB (longer lines are split).';

-- Workers: processes that work task runs, with their heartbeats.
CREATE TABLE workers (
    id                uuid        PRIMARY KEY,
    name              text        NOT NULL,
    queues            text[]      NOT NULL,
    hostname          text        NOT NULL,
    pid               integer     NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at        timestamptz
);
CREATE INDEX workers_last_heartbeat_at_idx ON workers (last_heartbeat_at);

COMMENT ON TABLE workers IS 'Worker processes (ordo worker -q QUEUE): one row per process start. A running worker updates last_heartbeat_at every few seconds.';
COMMENT ON COLUMN workers.id IS 'Id of this run of the worker process; TaskRunStarted events name the worker by its name.';
COMMENT ON COLUMN workers.name IS 'Name of the worker (defaults to hostname-pid).';
COMMENT ON COLUMN workers.queues IS 'Work queues the worker takes task runs from.';
COMMENT ON COLUMN workers.hostname IS 'Host the worker runs on.';
COMMENT ON COLUMN workers.pid IS 'Process id of the worker on its host.';
COMMENT ON COLUMN workers.started_at IS 'When the worker started.';
COMMENT ON COLUMN workers.last_heartbeat_at IS 'When the worker last reported that it is alive.';
COMMENT ON COLUMN workers.stopped_at IS 'When the worker stopped cleanly; NULL while it runs or if it died.';

CREATE VIEW worker_status AS
SELECT name, queues, hostname, pid, started_at, last_heartbeat_at, stopped_at,
       stopped_at IS NULL AND last_heartbeat_at > now() - interval '30 seconds' AS online
FROM workers
ORDER BY started_at DESC;
COMMENT ON VIEW worker_status IS 'Workers for people: online is true when the worker has not stopped and sent a heartbeat in the last 30 seconds.';

-- The due timer looks for the next due task run job often; this keeps that
-- a short index scan instead of a scan of River's jobs.
CREATE INDEX river_job_ordo_due_idx ON river_job (scheduled_at)
    WHERE state IN ('scheduled', 'available') AND kind = 'ordo.task_run';
COMMENT ON INDEX river_job_ordo_due_idx IS 'Ordo: scheduled and available ordo.task_run jobs by due time, for the due timer that makes jobs available and wakes workers at their time instead of River''s 5 s scheduler tick.';
