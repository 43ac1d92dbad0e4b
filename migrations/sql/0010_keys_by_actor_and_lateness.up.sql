-- Idempotency keys belong to who sent them: two API tokens that pick the
-- same key never get each other's response or run. Requests without a
-- token are all the actor "api", so a server without tokens works as
-- before.

-- Stored responses kept no actor: they are taken for the actor "api", the
-- one of requests without a token. A request with a token that retries
-- across this upgrade is handled again.
ALTER TABLE idempotency_keys ADD COLUMN actor text NOT NULL DEFAULT 'api';
ALTER TABLE idempotency_keys ALTER COLUMN actor DROP DEFAULT;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (key, actor);
COMMENT ON TABLE idempotency_keys IS 'The first response to each POST sent with an Idempotency-Key header, per actor (the API token): a retry by the same actor with the same key gets it again instead of repeating the command.';
COMMENT ON COLUMN idempotency_keys.actor IS 'Who sent the request: token:NAME, or api without a token. Keys of different actors never match.';

-- Run keys: the actor of each run already made is in its FlowRunCreated
-- event.
ALTER TABLE flow_run_idempotency_keys ADD COLUMN actor text;
UPDATE flow_run_idempotency_keys k
SET actor = coalesce((SELECT e.metadata->>'actor' FROM events e WHERE e.stream_id = k.flow_run_id AND e.version = 1), 'system');
ALTER TABLE flow_run_idempotency_keys ALTER COLUMN actor SET NOT NULL;
ALTER TABLE flow_run_idempotency_keys DROP CONSTRAINT flow_run_idempotency_keys_pkey;
ALTER TABLE flow_run_idempotency_keys ADD PRIMARY KEY (deployment_id, idempotency_key, actor);
COMMENT ON TABLE flow_run_idempotency_keys IS 'Idempotency keys given when creating runs: a create repeated by the same actor with the same key for the same deployment returns the run the first one created.';
COMMENT ON COLUMN flow_run_idempotency_keys.actor IS 'Who created the run (token:NAME, api, ...): keys of different actors never match.';

-- Lateness of the runs the scheduler does not create (manual runs,
-- sub-flow runs): it marks them Late like its own.
CREATE TABLE run_lateness_checks (
    flow_run_id  uuid        PRIMARY KEY,
    scheduled_at timestamptz NOT NULL
);
CREATE INDEX run_lateness_checks_scheduled_at_idx ON run_lateness_checks (scheduled_at);
COMMENT ON TABLE run_lateness_checks IS 'Write side: runs created outside the schedule (manual and sub-flow runs) whose lateness the scheduler has yet to check. When the lateness threshold has passed since scheduled_at, the scheduler marks the run Late if it has not started, and removes the row.';
COMMENT ON COLUMN run_lateness_checks.flow_run_id IS 'The flow run to check.';
COMMENT ON COLUMN run_lateness_checks.scheduled_at IS 'When the run was due.';
