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
