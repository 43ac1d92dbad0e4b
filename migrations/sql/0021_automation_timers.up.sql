-- Absence and count triggers: the open windows of absence triggers, the
-- failure streaks of consecutive_failures, and what a firing's trigger saw.

CREATE TABLE automation_timers (
    automation_id   uuid        NOT NULL,
    subject         uuid        NOT NULL,
    kind            text        NOT NULL,
    opened_position bigint      NOT NULL,
    opened_type     text        NOT NULL,
    since           timestamptz NOT NULL,
    deadline        timestamptz NOT NULL,
    deployment_name text        NOT NULL DEFAULT '',
    PRIMARY KEY (automation_id, subject)
);
CREATE INDEX automation_timers_due ON automation_timers (deadline);
CREATE INDEX automation_timers_subject ON automation_timers (subject);
COMMENT ON TABLE automation_timers IS 'Open windows of absence triggers, written by the automation consumer in the transaction that moves its checkpoint; at its deadline a window is checked against the log and fires once, or is dropped.';
COMMENT ON COLUMN automation_timers.automation_id IS 'The automation whose trigger the window belongs to.';
COMMENT ON COLUMN automation_timers.subject IS 'What the window watches: a flow run or task run (running_longer_than, not_started_within) or a deployment (not_completed_within).';
COMMENT ON COLUMN automation_timers.kind IS 'The trigger''s type.';
COMMENT ON COLUMN automation_timers.opened_position IS 'Log position of the event that opened the window; the firing''s trigger position, so that it is recorded once.';
COMMENT ON COLUMN automation_timers.opened_type IS 'Type of the event that opened the window.';
COMMENT ON COLUMN automation_timers.since IS 'When the window opened: running since, due at, last completion or the automation''s creation.';
COMMENT ON COLUMN automation_timers.deadline IS 'When it fires if nothing closes it first.';
COMMENT ON COLUMN automation_timers.deployment_name IS 'The deployment''s name (not_completed_within).';

CREATE TABLE automation_streaks (
    automation_id uuid        NOT NULL,
    deployment_id uuid        NOT NULL,
    failures      int         NOT NULL,
    since         timestamptz NOT NULL,
    last_run_id   uuid        NOT NULL,
    PRIMARY KEY (automation_id, deployment_id)
);
COMMENT ON TABLE automation_streaks IS 'consecutive_failures: flow runs of a deployment that ended FAILED or CRASHED in a row, kept by the automation consumer in the transaction that moves its checkpoint; a COMPLETED run removes the row.';
COMMENT ON COLUMN automation_streaks.automation_id IS 'The consecutive_failures automation.';
COMMENT ON COLUMN automation_streaks.deployment_id IS 'The deployment whose runs failed.';
COMMENT ON COLUMN automation_streaks.failures IS 'Runs in a row that ended FAILED or CRASHED.';
COMMENT ON COLUMN automation_streaks.since IS 'When the first failure of the streak was recorded.';
COMMENT ON COLUMN automation_streaks.last_run_id IS 'The flow run that failed last: a retried run that fails again is still one run of the streak.';

ALTER TABLE automation_firings
    ADD COLUMN trigger_kind text NOT NULL DEFAULT 'state',
    ADD COLUMN trigger_window jsonb;
COMMENT ON COLUMN automation_firings.trigger_kind IS 'The automation''s trigger type when it fired (state, running_longer_than, ...), or test.';
COMMENT ON COLUMN automation_firings.trigger_window IS 'For absence and count triggers: the window that fired (since, deadline, seconds, count, deployment).';
