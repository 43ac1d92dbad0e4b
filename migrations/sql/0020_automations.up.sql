-- Automations: the write-side rows their commands keep (the stream is the
-- truth), the consumer's checkpoint, and each firing with its deliveries.

CREATE TABLE automations (
    id         uuid PRIMARY KEY,
    name       text        NOT NULL,
    spec       jsonb       NOT NULL,
    paused     boolean     NOT NULL DEFAULT false,
    deleted    boolean     NOT NULL DEFAULT false,
    version    bigint      NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX automations_name ON automations (name) WHERE NOT deleted;
COMMENT ON TABLE automations IS 'Every automation, kept by its commands in the transaction that appends its events (its stream is the truth); a deleted one stays, marked, so that its name is free and the consumer still knows it.';
COMMENT ON COLUMN automations.spec IS 'The automation''s spec (name, trigger, filter, actions) as of its last event.';
COMMENT ON COLUMN automations.version IS 'The version of the automation''s stream this row reflects.';

CREATE TABLE automation_checkpoints (
    name           text PRIMARY KEY,
    transaction_id xid8        NOT NULL DEFAULT '0',
    position       bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE automation_checkpoints IS 'How far the automation consumer has read the event log; moved in the transaction that records the firings of the events it covers.';

CREATE TABLE automation_firings (
    id               uuid PRIMARY KEY,
    automation_id    uuid        NOT NULL,
    trigger_position bigint,
    trigger_type     text        NOT NULL,
    flow_run_id      uuid,
    task_run_id      uuid,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX automation_firings_once ON automation_firings (automation_id, trigger_position);
CREATE INDEX automation_firings_run ON automation_firings (flow_run_id);
COMMENT ON TABLE automation_firings IS 'One row per firing of an automation, written with its AutomationFired event and its delivery jobs.';
COMMENT ON COLUMN automation_firings.id IS 'The firing''s stream id, and the idempotency key its receivers get.';
COMMENT ON COLUMN automation_firings.trigger_position IS 'Log position of the triggering event; NULL for a test firing. Unique per automation: a firing is recorded once.';

CREATE TABLE automation_deliveries (
    firing_id        uuid        NOT NULL REFERENCES automation_firings (id) ON DELETE CASCADE,
    action           int         NOT NULL,
    automation_id    uuid        NOT NULL,
    action_type      text        NOT NULL,
    target           text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         int         NOT NULL DEFAULT 0,
    last_status_code int,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (firing_id, action)
);
CREATE INDEX automation_deliveries_recent ON automation_deliveries (automation_id, created_at DESC);
COMMENT ON TABLE automation_deliveries IS 'One row per action of a firing: where its delivery stands.';
COMMENT ON COLUMN automation_deliveries.action IS 'Index of the action in the automation''s actions when it fired.';
COMMENT ON COLUMN automation_deliveries.target IS 'Where it is delivered (a webhook''s URL).';
COMMENT ON COLUMN automation_deliveries.status IS 'pending (under way or retrying), delivered, or dead (no attempt left, or the target was refused).';

CREATE TABLE automation_delivery_attempts (
    firing_id   uuid        NOT NULL,
    action      int         NOT NULL,
    attempt     int         NOT NULL,
    status_code int,
    latency_ms  double precision NOT NULL,
    error       text,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (firing_id, action, attempt),
    FOREIGN KEY (firing_id, action) REFERENCES automation_deliveries (firing_id, action) ON DELETE CASCADE
);
COMMENT ON TABLE automation_delivery_attempts IS 'Each delivery attempt: the answer''s status code (NULL when none came), how long it took, and what went wrong.';

COMMENT ON COLUMN automations.id IS 'The automation''s id: its stream id.';
COMMENT ON COLUMN automations.name IS 'Its name, unique among automations not deleted.';
COMMENT ON COLUMN automations.paused IS 'Paused: it fires for no event until resumed.';
COMMENT ON COLUMN automations.deleted IS 'Deleted: it fires no more and its name is free; the row stays for the consumer, which follows the log from an older checkpoint.';
COMMENT ON COLUMN automations.created_at IS 'When it was created (its first event).';
COMMENT ON COLUMN automations.updated_at IS 'When its last event was recorded.';
COMMENT ON COLUMN automation_checkpoints.name IS 'The consumer (automations is the one that fires them).';
COMMENT ON COLUMN automation_checkpoints.transaction_id IS 'Transaction id of the last event read (the log is read in transaction id, position order).';
COMMENT ON COLUMN automation_checkpoints.position IS 'Position of the last event read.';
COMMENT ON COLUMN automation_checkpoints.updated_at IS 'When the checkpoint last moved.';
COMMENT ON COLUMN automation_firings.automation_id IS 'The automation that fired.';
COMMENT ON COLUMN automation_firings.trigger_type IS 'The triggering event''s type, or test for a test firing.';
COMMENT ON COLUMN automation_firings.flow_run_id IS 'The flow run of the triggering event; NULL for a test firing.';
COMMENT ON COLUMN automation_firings.task_run_id IS 'The task run of the triggering event, when it was a task run''s.';
COMMENT ON COLUMN automation_firings.created_at IS 'When the firing was recorded.';
COMMENT ON COLUMN automation_deliveries.firing_id IS 'The firing delivered.';
COMMENT ON COLUMN automation_deliveries.automation_id IS 'The automation that fired, for listing its deliveries.';
COMMENT ON COLUMN automation_deliveries.action_type IS 'The action''s type (webhook).';
COMMENT ON COLUMN automation_deliveries.attempts IS 'Attempts made so far.';
COMMENT ON COLUMN automation_deliveries.last_status_code IS 'HTTP status of the last attempt''s answer; NULL when none came.';
COMMENT ON COLUMN automation_deliveries.last_error IS 'What went wrong in the last attempt; NULL when it was delivered.';
COMMENT ON COLUMN automation_deliveries.created_at IS 'When the firing was recorded.';
COMMENT ON COLUMN automation_deliveries.updated_at IS 'When the last attempt was recorded.';
COMMENT ON COLUMN automation_delivery_attempts.firing_id IS 'The firing delivered.';
COMMENT ON COLUMN automation_delivery_attempts.action IS 'The action of the firing (its index).';
COMMENT ON COLUMN automation_delivery_attempts.attempt IS 'Which attempt, from 1.';
COMMENT ON COLUMN automation_delivery_attempts.status_code IS 'HTTP status of the answer; NULL when none came.';
COMMENT ON COLUMN automation_delivery_attempts.latency_ms IS 'From sending the request to the end of the answer''s (capped) body, in milliseconds.';
COMMENT ON COLUMN automation_delivery_attempts.error IS 'What went wrong; NULL when delivered.';
COMMENT ON COLUMN automation_delivery_attempts.at IS 'When the attempt was recorded.';
