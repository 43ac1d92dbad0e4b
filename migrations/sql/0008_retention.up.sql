-- Retention: `ordo prune` removes the events of old finished runs from the
-- log, after writing them to an archive file, and records the archival as
-- an EventsArchived event. The log stays append-only for everything else:
-- the trigger function lets a DELETE through only in a transaction that
-- has set ordo.pruning, transaction-locally, to its own transaction id
-- (SELECT set_config('ordo.pruning', pg_current_xact_id()::text, true)),
-- which is what prune does and nothing else does by accident. UPDATE and
-- TRUNCATE stay refused.
CREATE OR REPLACE FUNCTION events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('ordo.pruning', true) = pg_current_xact_id()::text THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the events table is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'events are never changed; append a new event instead (ordo prune archives and removes the events of old finished runs)';
END;
$$;
COMMENT ON FUNCTION events_refuse_change() IS 'Refuses UPDATE, DELETE and TRUNCATE on the events table, except DELETE inside the transaction of ordo prune, which sets ordo.pruning to its own transaction id after archiving the events it removes.';

COMMENT ON TABLE events IS 'The append-only event log: every state change of every deployment, flow run and task run, in order. Rows are never updated or deleted (a trigger refuses it), except by ordo prune, which first archives the events of old finished runs to a file and records that as an EventsArchived event; all other tables are projections of this one.';
COMMENT ON COLUMN events.stream_type IS 'Kind of entity the stream is: deployment, flow_run, task_run, or retention (the records of ordo prune).';

-- prune looks for runs that ended before a time
CREATE INDEX flow_runs_ended_idx ON flow_runs (ended_at, id) WHERE ended_at IS NOT NULL;
COMMENT ON INDEX flow_runs_ended_idx IS 'Finished flow runs by end time, for ordo prune.';
