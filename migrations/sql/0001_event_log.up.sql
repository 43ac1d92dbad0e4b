-- The event log: Ordo's single source of truth. Every state change of every
-- deployment, flow run and task run is one row here, appended and never
-- changed. Everything else in the database can be rebuilt from it.
CREATE TABLE events (
    position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id      uuid        NOT NULL,
    stream_type    text        NOT NULL,
    version        bigint      NOT NULL CHECK (version > 0),
    type           text        NOT NULL,
    data           jsonb       NOT NULL DEFAULT '{}',
    metadata       jsonb       NOT NULL DEFAULT '{}',
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

-- Readers of the global log walk it in (transaction_id, position) order.
CREATE INDEX events_transaction_position_idx ON events (transaction_id, position);

COMMENT ON TABLE events IS 'The append-only event log: every state change of every deployment, flow run and task run, in order. Rows are never updated or deleted (a trigger refuses it); all other tables are projections of this one.';
COMMENT ON COLUMN events.position IS 'Global position: increases with every appended event. Positions become visible in commit order, not in position order, so readers order by (transaction_id, position).';
COMMENT ON COLUMN events.transaction_id IS 'Id of the transaction that appended the event (pg_current_xact_id()). A reader only reads events whose transaction id is below the oldest running transaction, so it never skips an event that commits late.';
COMMENT ON COLUMN events.stream_id IS 'The entity the event belongs to: a deployment, flow run or task run id.';
COMMENT ON COLUMN events.stream_type IS 'Kind of entity the stream is: deployment, flow_run or task_run.';
COMMENT ON COLUMN events.version IS 'Position of the event within its stream, from 1 without gaps. Unique per stream: two writers that expect the same version cannot both append.';
COMMENT ON COLUMN events.type IS 'What happened, in the past tense: FlowRunScheduled, TaskRunCompleted, ...';
COMMENT ON COLUMN events.data IS 'The event payload (JSON), its shape fixed by the event type.';
COMMENT ON COLUMN events.metadata IS 'Who and why: actor (API token, worker or scheduler), reason, causation_id, correlation_id.';
COMMENT ON COLUMN events.recorded_at IS 'When the appending transaction started.';

-- The log is immutable: the database itself refuses edits, so the audit trail
-- cannot be changed by accident from psql or pgadmin.
CREATE FUNCTION events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'events are never changed; append a new event instead';
END;
$$;
COMMENT ON FUNCTION events_refuse_change() IS 'Refuses UPDATE, DELETE and TRUNCATE on the events table.';

CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- A plain view for people: the log with readable columns.
CREATE VIEW event_log AS
SELECT position, recorded_at, stream_type, stream_id, version, type,
       metadata->>'actor' AS actor, metadata->>'reason' AS reason, data
FROM events
ORDER BY position;
COMMENT ON VIEW event_log IS 'The event log for people: one line per event with its actor and reason, in position order.';
