-- Read models: tables built from the event log by the projector. Every row
-- here can be thrown away and rebuilt from the events table (ordo replay).
-- Also two small write-side tables: deployment names and idempotency keys.

-- Write side: deployment names ------------------------------------------------

CREATE TABLE deployment_names (
    name          text PRIMARY KEY,
    deployment_id uuid NOT NULL UNIQUE
);
COMMENT ON TABLE deployment_names IS 'Write side: which live deployment holds each name. Kept in the same transaction as the deployment events; a deleted deployment frees its name. Not a projection: it is not rebuilt by replay.';
COMMENT ON COLUMN deployment_names.name IS 'The deployment name users save under (POST /deployments creates or updates by name).';
COMMENT ON COLUMN deployment_names.deployment_id IS 'The deployment (event stream id) that holds the name.';

-- Write side: idempotency keys -------------------------------------------------

CREATE TABLE idempotency_keys (
    key          text PRIMARY KEY,
    request_hash bytea       NOT NULL,
    status       int,
    content_type text,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
COMMENT ON TABLE idempotency_keys IS 'The first response to each POST sent with an Idempotency-Key header; a retry with the same key gets it again instead of repeating the command.';
COMMENT ON COLUMN idempotency_keys.key IS 'The Idempotency-Key header value.';
COMMENT ON COLUMN idempotency_keys.request_hash IS 'SHA-256 of method, path and body of the first request: the same key with a different request is refused.';
COMMENT ON COLUMN idempotency_keys.status IS 'HTTP status of the first response; NULL while the first request is still being handled.';
COMMENT ON COLUMN idempotency_keys.content_type IS 'Content-Type of the first response.';
COMMENT ON COLUMN idempotency_keys.body IS 'Body of the first response.';
COMMENT ON COLUMN idempotency_keys.created_at IS 'When the first request with this key arrived.';
COMMENT ON COLUMN idempotency_keys.completed_at IS 'When its response was stored.';

-- Projector checkpoints ----------------------------------------------------------

CREATE TABLE projection_checkpoints (
    name           text PRIMARY KEY,
    transaction_id xid8        NOT NULL DEFAULT '0',
    position       bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE projection_checkpoints IS 'How far each projector has applied the event log. Written in the same transaction as the read-model rows it covers, so a crash neither loses nor repeats an event.';
COMMENT ON COLUMN projection_checkpoints.name IS 'The projector (read_models is the one that fills the tables below).';
COMMENT ON COLUMN projection_checkpoints.transaction_id IS 'Transaction id of the last applied event; the log is read in (transaction_id, position) order.';
COMMENT ON COLUMN projection_checkpoints.position IS 'Position of the last applied event (0: nothing applied yet).';
COMMENT ON COLUMN projection_checkpoints.updated_at IS 'When the checkpoint last moved.';

-- Deployments ---------------------------------------------------------------------

CREATE TABLE deployments (
    id             uuid PRIMARY KEY,
    name           text        NOT NULL,
    version        int         NOT NULL,
    description    text        NOT NULL DEFAULT '',
    work_queue     text        NOT NULL,
    tags           text[]      NOT NULL DEFAULT '{}',
    parameters     jsonb       NOT NULL DEFAULT '{}',
    schedule       jsonb,
    paused         boolean     NOT NULL DEFAULT false,
    flow           jsonb       NOT NULL,
    spec           jsonb       NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    stream_version bigint      NOT NULL
);
CREATE INDEX deployments_name_idx ON deployments (name, id);
COMMENT ON TABLE deployments IS 'Read model: each live deployment at its latest version. Deleted deployments are removed (their runs stay in flow_runs).';
COMMENT ON COLUMN deployments.id IS 'Deployment id (its event stream id).';
COMMENT ON COLUMN deployments.name IS 'Unique name among live deployments.';
COMMENT ON COLUMN deployments.version IS 'Spec version: 1 at creation, +1 for each saved change.';
COMMENT ON COLUMN deployments.description IS 'Free text from the spec.';
COMMENT ON COLUMN deployments.work_queue IS 'Work queue its runs go to.';
COMMENT ON COLUMN deployments.tags IS 'Tags given to its runs.';
COMMENT ON COLUMN deployments.parameters IS 'Default run parameters.';
COMMENT ON COLUMN deployments.schedule IS 'Schedule ({interval_seconds} or {cron, timezone}); NULL when runs start only by hand.';
COMMENT ON COLUMN deployments.paused IS 'Whether the schedule is off.';
COMMENT ON COLUMN deployments.flow IS 'The flow: name and tasks with their dependencies.';
COMMENT ON COLUMN deployments.spec IS 'The whole deployment spec as saved.';
COMMENT ON COLUMN deployments.created_at IS 'When the deployment was created.';
COMMENT ON COLUMN deployments.updated_at IS 'When its last event was recorded.';
COMMENT ON COLUMN deployments.stream_version IS 'Version of the last event of its stream applied here.';

-- Flow runs -------------------------------------------------------------------------

CREATE TABLE flow_runs (
    id                 uuid PRIMARY KEY,
    name               text        NOT NULL,
    flow_name          text        NOT NULL,
    deployment_id      uuid        NOT NULL,
    deployment_name    text        NOT NULL,
    deployment_version int         NOT NULL,
    work_queue         text        NOT NULL,
    tags               text[]      NOT NULL DEFAULT '{}',
    parameters         jsonb       NOT NULL DEFAULT '{}',
    state_type         text        NOT NULL,
    state_name         text        NOT NULL,
    state_timestamp    timestamptz NOT NULL,
    state_message      text        NOT NULL DEFAULT '',
    scheduled_at       timestamptz NOT NULL,
    started_at         timestamptz,
    ended_at           timestamptz,
    run_count          int         NOT NULL DEFAULT 0,
    parent_task_run_id uuid,
    parent_flow_run_id uuid,
    auto_scheduled     boolean     NOT NULL DEFAULT false,
    result             jsonb,
    task_count         int         NOT NULL,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    stream_version     bigint      NOT NULL
);
-- GET /runs: newest first by (scheduled_at, id), filtered.
CREATE INDEX flow_runs_scheduled_idx ON flow_runs (scheduled_at DESC, id DESC);
CREATE INDEX flow_runs_state_idx ON flow_runs (state_type, scheduled_at DESC, id DESC);
CREATE INDEX flow_runs_deployment_idx ON flow_runs (deployment_id, scheduled_at DESC, id DESC);
CREATE INDEX flow_runs_work_queue_idx ON flow_runs (work_queue, scheduled_at DESC, id DESC);
CREATE INDEX flow_runs_tags_idx ON flow_runs USING gin (tags);
CREATE INDEX flow_runs_parent_idx ON flow_runs (parent_task_run_id) WHERE parent_task_run_id IS NOT NULL;
-- next_runs of a deployment
CREATE INDEX flow_runs_next_idx ON flow_runs (deployment_id, scheduled_at) WHERE state_type = 'SCHEDULED';
COMMENT ON TABLE flow_runs IS 'Read model: each flow run in its current state, with parameters, timings and result.';
COMMENT ON COLUMN flow_runs.id IS 'Flow run id (its event stream id).';
COMMENT ON COLUMN flow_runs.name IS 'Run name, shown in lists.';
COMMENT ON COLUMN flow_runs.flow_name IS 'Name of the flow it runs.';
COMMENT ON COLUMN flow_runs.deployment_id IS 'The deployment it is a run of.';
COMMENT ON COLUMN flow_runs.deployment_name IS 'The deployment name when the run was created.';
COMMENT ON COLUMN flow_runs.deployment_version IS 'The deployment spec version the run uses.';
COMMENT ON COLUMN flow_runs.work_queue IS 'Work queue its tasks go to (unless a task overrides it).';
COMMENT ON COLUMN flow_runs.tags IS 'Tags of the run.';
COMMENT ON COLUMN flow_runs.parameters IS 'Run parameters: the deployment defaults merged with the overrides.';
COMMENT ON COLUMN flow_runs.state_type IS 'Current state type: SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CANCELLING, CANCELLED, CRASHED or PAUSED.';
COMMENT ON COLUMN flow_runs.state_name IS 'Current named state (Late, AwaitingRetry, ...).';
COMMENT ON COLUMN flow_runs.state_timestamp IS 'When the current state was entered.';
COMMENT ON COLUMN flow_runs.state_message IS 'Why the current state was entered, if said.';
COMMENT ON COLUMN flow_runs.scheduled_at IS 'When the run is or was due.';
COMMENT ON COLUMN flow_runs.started_at IS 'When it first started running.';
COMMENT ON COLUMN flow_runs.ended_at IS 'When it reached its terminal state; NULL while it goes on.';
COMMENT ON COLUMN flow_runs.run_count IS 'How many times it started running (1 + user retries).';
COMMENT ON COLUMN flow_runs.parent_task_run_id IS 'For a sub-flow: the task run of the parent flow that started it.';
COMMENT ON COLUMN flow_runs.parent_flow_run_id IS 'For a sub-flow: the parent flow run.';
COMMENT ON COLUMN flow_runs.auto_scheduled IS 'Whether the scheduler created it (rather than a user).';
COMMENT ON COLUMN flow_runs.result IS 'Result of the completed run (JSON).';
COMMENT ON COLUMN flow_runs.task_count IS 'Number of task runs in the run.';
COMMENT ON COLUMN flow_runs.created_at IS 'When the run was created.';
COMMENT ON COLUMN flow_runs.updated_at IS 'When its last event was recorded.';
COMMENT ON COLUMN flow_runs.stream_version IS 'Version of the last event of its stream applied here.';

-- Task runs ---------------------------------------------------------------------------

CREATE TABLE task_runs (
    id                uuid PRIMARY KEY,
    flow_run_id       uuid        NOT NULL,
    task_name         text        NOT NULL,
    kind              text        NOT NULL,
    depends_on        text[]      NOT NULL DEFAULT '{}',
    tags              text[]      NOT NULL DEFAULT '{}',
    task              jsonb       NOT NULL,
    state_type        text        NOT NULL,
    state_name        text        NOT NULL,
    state_timestamp   timestamptz NOT NULL,
    state_message     text        NOT NULL DEFAULT '',
    run_count         int         NOT NULL DEFAULT 0,
    started_at        timestamptz,
    ended_at          timestamptz,
    retry_at          timestamptz,
    result            jsonb,
    error             text,
    exit_code         int,
    cache_key         text,
    child_flow_run_id uuid,
    created_position  bigint      NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    stream_version    bigint      NOT NULL
);
CREATE INDEX task_runs_flow_run_idx ON task_runs (flow_run_id, created_position);
CREATE INDEX task_runs_state_idx ON task_runs (state_type);
COMMENT ON TABLE task_runs IS 'Read model: each task run in its current state, with its last result or error.';
COMMENT ON COLUMN task_runs.id IS 'Task run id (its event stream id).';
COMMENT ON COLUMN task_runs.flow_run_id IS 'The flow run it belongs to.';
COMMENT ON COLUMN task_runs.task_name IS 'Name of the task in the flow.';
COMMENT ON COLUMN task_runs.kind IS 'What it runs: command, handler or deployment (a sub-flow).';
COMMENT ON COLUMN task_runs.depends_on IS 'Names of the tasks it waits for.';
COMMENT ON COLUMN task_runs.tags IS 'Tags of the task.';
COMMENT ON COLUMN task_runs.task IS 'The task spec (command, retries, timeout, cache, ...).';
COMMENT ON COLUMN task_runs.state_type IS 'Current state type.';
COMMENT ON COLUMN task_runs.state_name IS 'Current named state (Retrying, AwaitingRetry, Cached, TimedOut, NotRun, ...).';
COMMENT ON COLUMN task_runs.state_timestamp IS 'When the current state was entered.';
COMMENT ON COLUMN task_runs.state_message IS 'Why the current state was entered, if said.';
COMMENT ON COLUMN task_runs.run_count IS 'Attempts started so far.';
COMMENT ON COLUMN task_runs.started_at IS 'When its first attempt started.';
COMMENT ON COLUMN task_runs.ended_at IS 'When it reached a terminal state; NULL while it goes on.';
COMMENT ON COLUMN task_runs.retry_at IS 'When the next attempt is due, after a failed one.';
COMMENT ON COLUMN task_runs.result IS 'Result of the successful attempt or of the cache (JSON).';
COMMENT ON COLUMN task_runs.error IS 'Error of the last failed attempt; NULL once it succeeds.';
COMMENT ON COLUMN task_runs.exit_code IS 'Exit status of the last failed attempt of a command task.';
COMMENT ON COLUMN task_runs.cache_key IS 'Key its result is cached under, if the task is cached.';
COMMENT ON COLUMN task_runs.child_flow_run_id IS 'For a sub-flow task: the flow run it started.';
COMMENT ON COLUMN task_runs.created_position IS 'Log position of its TaskRunCreated event: lists show task runs in the order they were created.';
COMMENT ON COLUMN task_runs.created_at IS 'When the task run was created (with its flow run).';
COMMENT ON COLUMN task_runs.updated_at IS 'When its last event was recorded.';
COMMENT ON COLUMN task_runs.stream_version IS 'Version of the last event of its stream applied here.';

CREATE TABLE task_run_attempts (
    task_run_id uuid        NOT NULL,
    attempt     int         NOT NULL,
    flow_run_id uuid        NOT NULL,
    worker      text        NOT NULL DEFAULT '',
    started_at  timestamptz,
    ended_at    timestamptz,
    outcome     text        NOT NULL,
    error       text,
    exit_code   int,
    PRIMARY KEY (task_run_id, attempt)
);
CREATE INDEX task_run_attempts_flow_run_idx ON task_run_attempts (flow_run_id);
COMMENT ON TABLE task_run_attempts IS 'Read model: one row per attempt of a task run, on which worker, how it ended.';
COMMENT ON COLUMN task_run_attempts.task_run_id IS 'The task run.';
COMMENT ON COLUMN task_run_attempts.attempt IS 'Attempt number, from 1.';
COMMENT ON COLUMN task_run_attempts.flow_run_id IS 'The flow run of the task run.';
COMMENT ON COLUMN task_run_attempts.worker IS 'Worker that ran the attempt.';
COMMENT ON COLUMN task_run_attempts.started_at IS 'When the attempt started.';
COMMENT ON COLUMN task_run_attempts.ended_at IS 'When it ended; NULL while running.';
COMMENT ON COLUMN task_run_attempts.outcome IS 'running, completed, failed, timed_out, crashed or cancelled.';
COMMENT ON COLUMN task_run_attempts.error IS 'Why it failed.';
COMMENT ON COLUMN task_run_attempts.exit_code IS 'Exit status of the command, when it exited.';

-- State history ---------------------------------------------------------------------------

CREATE TABLE state_history (
    stream_id      uuid        NOT NULL,
    version        bigint      NOT NULL,
    stream_type    text        NOT NULL,
    flow_run_id    uuid        NOT NULL,
    position       bigint      NOT NULL,
    transaction_id bigint      NOT NULL,
    event_type     text        NOT NULL,
    from_type      text,
    from_name      text,
    to_type        text        NOT NULL,
    to_name        text        NOT NULL,
    message        text        NOT NULL DEFAULT '',
    actor          text        NOT NULL DEFAULT '',
    reason         text        NOT NULL DEFAULT '',
    at             timestamptz NOT NULL,
    PRIMARY KEY (stream_id, version)
);
CREATE INDEX state_history_flow_run_idx ON state_history (flow_run_id, transaction_id, position);
COMMENT ON TABLE state_history IS 'Read model: every event of every flow run and task run with the state before and after it, who caused it and why.';
COMMENT ON COLUMN state_history.stream_id IS 'The flow run or task run.';
COMMENT ON COLUMN state_history.version IS 'Version of the event in its stream.';
COMMENT ON COLUMN state_history.stream_type IS 'flow_run or task_run.';
COMMENT ON COLUMN state_history.flow_run_id IS 'The flow run (itself, or the one the task run belongs to).';
COMMENT ON COLUMN state_history.position IS 'Position of the event in the log.';
COMMENT ON COLUMN state_history.transaction_id IS 'Transaction that appended the event; (transaction_id, position) is log order.';
COMMENT ON COLUMN state_history.event_type IS 'The event (FlowRunStarted, TaskRunRetryScheduled, ...).';
COMMENT ON COLUMN state_history.from_type IS 'State type before the event; NULL for the first event of the stream.';
COMMENT ON COLUMN state_history.from_name IS 'Named state before the event.';
COMMENT ON COLUMN state_history.to_type IS 'State type after the event (the same as before for events that change no state, such as a refused stale result).';
COMMENT ON COLUMN state_history.to_name IS 'Named state after the event.';
COMMENT ON COLUMN state_history.message IS 'Message of the state after the event.';
COMMENT ON COLUMN state_history.actor IS 'Who caused the event (token:NAME, worker:ID, scheduler, ...).';
COMMENT ON COLUMN state_history.reason IS 'Why, in words, if said.';
COMMENT ON COLUMN state_history.at IS 'When the event was recorded.';

-- Views for people (pgadmin) -----------------------------------------------------------------

CREATE VIEW state_transitions AS
SELECT h.at, h.stream_type, h.stream_id,
       coalesce(t.task_name, '(flow run)') AS task_name,
       h.flow_run_id, f.name AS flow_run_name,
       coalesce(h.from_type || '/' || h.from_name, '(new)') AS from_state,
       h.to_type || '/' || h.to_name AS to_state,
       h.event_type, h.actor, h.reason, h.message, h.position
FROM state_history h
LEFT JOIN task_runs t ON t.id = h.stream_id
LEFT JOIN flow_runs f ON f.id = h.flow_run_id
ORDER BY h.transaction_id, h.position;
COMMENT ON VIEW state_transitions IS 'Every state change of every run and task run, in log order: from -> to, who and why.';

CREATE VIEW run_timeline AS
SELECT f.name AS flow_run_name, f.deployment_name, h.flow_run_id, h.at,
       coalesce(t.task_name, '(flow run)') AS task_name,
       h.event_type, h.to_type AS state_type, h.to_name AS state_name, h.message,
       h.at - f.created_at AS since_created, h.actor
FROM state_history h
JOIN flow_runs f ON f.id = h.flow_run_id
LEFT JOIN task_runs t ON t.id = h.stream_id
ORDER BY h.flow_run_id, h.transaction_id, h.position;
COMMENT ON VIEW run_timeline IS 'Each flow run as a timeline: its events and its task runs'' events, with the time since the run was created. Filter by flow_run_name or flow_run_id.';

CREATE VIEW task_run_attempts_view AS
SELECT f.name AS flow_run_name, t.task_name, a.attempt, a.outcome, a.worker,
       a.started_at, a.ended_at, a.ended_at - a.started_at AS duration,
       a.error, a.exit_code, a.task_run_id, a.flow_run_id
FROM task_run_attempts a
JOIN task_runs t ON t.id = a.task_run_id
JOIN flow_runs f ON f.id = a.flow_run_id
ORDER BY a.started_at, a.task_run_id, a.attempt;
COMMENT ON VIEW task_run_attempts_view IS 'Every attempt of every task run with its flow run and task name, duration, worker and error.';
