DROP INDEX IF EXISTS flow_runs_ended_idx;

CREATE OR REPLACE FUNCTION events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'events are never changed; append a new event instead';
END;
$$;
COMMENT ON FUNCTION events_refuse_change() IS 'Refuses UPDATE, DELETE and TRUNCATE on the events table.';
COMMENT ON TABLE events IS 'The append-only event log: every state change of every deployment, flow run and task run, in order. Rows are never updated or deleted (a trigger refuses it); all other tables are projections of this one.';
COMMENT ON COLUMN events.stream_type IS 'Kind of entity the stream is: deployment, flow_run or task_run.';
