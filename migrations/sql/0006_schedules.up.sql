-- Schedules and deployment concurrency: the write-side tables of the
-- scheduler (jobs/scheduler.go) and of deployment concurrency limits
-- (jobs/deployruns.go). Like the other write-side tables they are not a
-- source of truth for history: the runs they name are in the event log.

-- The scheduler's progress through each deployment's schedule.
CREATE TABLE deployment_schedules (
    deployment_id     uuid        PRIMARY KEY,
    epoch             bigint      NOT NULL CHECK (epoch > 0),
    epoch_started_at  timestamptz NOT NULL,
    scheduled_through timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE deployment_schedules IS 'How far the scheduler has gone through each deployment''s schedule. Every scheduled time of the current epoch up to scheduled_through has been dealt with: a run was created for it, or the catch-up policy skipped it. The scheduler locks the row (FOR UPDATE) while it works on the deployment, and so do deployment commands that cancel scheduled runs, so two writers never create or cancel the same runs at once.';
COMMENT ON COLUMN deployment_schedules.deployment_id IS 'The deployment.';
COMMENT ON COLUMN deployment_schedules.epoch IS 'Version of the deployment''s stream from which its current schedule applies: the event that created it, changed its schedule or what its runs are made of (flow, parameters, parameters_schema, work_queue, tags), or resumed it. Runs created in an earlier epoch that have not started are cancelled.';
COMMENT ON COLUMN deployment_schedules.epoch_started_at IS 'When the event that began the epoch was recorded: scheduled times before it are never run.';
COMMENT ON COLUMN deployment_schedules.scheduled_through IS 'Every scheduled time of the epoch up to and including this one has a run or was skipped by the catch-up policy; the next tick goes on from here.';
COMMENT ON COLUMN deployment_schedules.updated_at IS 'When the scheduler last moved scheduled_through or changed the epoch.';

-- One row per run the scheduler created.
CREATE TABLE scheduled_runs (
    deployment_id uuid        NOT NULL,
    epoch         bigint      NOT NULL,
    scheduled_at  timestamptz NOT NULL,
    flow_run_id   uuid        NOT NULL UNIQUE,
    state         text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
    late          boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment_id, epoch, scheduled_at)
);
CREATE INDEX scheduled_runs_pending_idx ON scheduled_runs (deployment_id, scheduled_at) WHERE state = 'pending';

COMMENT ON TABLE scheduled_runs IS 'Runs created by deployment schedules, one per (deployment, epoch, scheduled time): the primary key makes creating a scheduled run idempotent, so two schedulers running at once can never create a run twice. The scheduler follows each run here until it starts or ends.';
COMMENT ON COLUMN scheduled_runs.deployment_id IS 'The deployment whose schedule created the run.';
COMMENT ON COLUMN scheduled_runs.epoch IS 'The deployment_schedules.epoch the run was created in.';
COMMENT ON COLUMN scheduled_runs.scheduled_at IS 'The scheduled time the run is for. A run created after its time (caught up) is recorded in the log as due when it was created; this column keeps the time it stood for.';
COMMENT ON COLUMN scheduled_runs.flow_run_id IS 'The flow run.';
COMMENT ON COLUMN scheduled_runs.state IS 'pending: no task of the run has started yet, so the scheduler may still mark it late or cancel it (schedule changed, deployment paused or deleted, catch-up policy); done: it started or ended, and the scheduler leaves it alone.';
COMMENT ON COLUMN scheduled_runs.late IS 'True once the scheduler found the run late (no task started LateAfter, 15 s by default, after its time) and recorded FlowRunLate for it (when it was still SCHEDULED: a run created after its time is PENDING at once and gets no FlowRunLate).';
COMMENT ON COLUMN scheduled_runs.created_at IS 'When the scheduler created the run.';

-- Deployment concurrency limits: which runs hold a slot, which wait.
CREATE TABLE deployment_run_slots (
    flow_run_id   uuid        PRIMARY KEY,
    deployment_id uuid        NOT NULL,
    state         text        NOT NULL CHECK (state IN ('waiting', 'active')),
    due_at        timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    admitted_at   timestamptz,
    CHECK ((state = 'active') = (admitted_at IS NOT NULL))
);
CREATE INDEX deployment_run_slots_deployment_idx ON deployment_run_slots (deployment_id, state, due_at);

COMMENT ON TABLE deployment_run_slots IS 'Runs of deployments that have a concurrency_limit: at most that many rows per deployment are active. A run of such a deployment is created with no task queued and waits here; when it is due and a slot is free its root tasks are queued (in order of due_at) and it becomes active. The row goes when the run ends, in the transaction that ends it, or at the scheduler''s next tick. Changed only under a per-deployment transaction advisory lock.';
COMMENT ON COLUMN deployment_run_slots.flow_run_id IS 'The flow run.';
COMMENT ON COLUMN deployment_run_slots.deployment_id IS 'Its deployment.';
COMMENT ON COLUMN deployment_run_slots.state IS 'waiting: created, not queued yet (not due, or no slot free under concurrency_policy enqueue); active: holds a slot, its tasks are queued or running.';
COMMENT ON COLUMN deployment_run_slots.due_at IS 'When the run is due: waiting runs are admitted in this order.';
COMMENT ON COLUMN deployment_run_slots.created_at IS 'When the run was created.';
COMMENT ON COLUMN deployment_run_slots.admitted_at IS 'When the run got its slot; NULL while it waits.';

CREATE VIEW deployment_concurrency AS
SELECT deployment_id,
       count(*) FILTER (WHERE state = 'active')  AS active_runs,
       count(*) FILTER (WHERE state = 'waiting') AS waiting_runs,
       min(due_at) FILTER (WHERE state = 'waiting') AS oldest_waiting_due_at
FROM deployment_run_slots
GROUP BY deployment_id;
COMMENT ON VIEW deployment_concurrency IS 'Deployments with a concurrency limit, for people: how many runs hold a slot and how many wait for one.';
