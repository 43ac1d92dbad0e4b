DROP TABLE IF EXISTS run_lateness_checks;

-- The oldest use of each key wins back the key alone.
DELETE FROM flow_run_idempotency_keys a USING flow_run_idempotency_keys b
WHERE a.deployment_id = b.deployment_id AND a.idempotency_key = b.idempotency_key
  AND (a.created_at, a.actor) > (b.created_at, b.actor);
ALTER TABLE flow_run_idempotency_keys DROP COLUMN actor;
ALTER TABLE flow_run_idempotency_keys ADD PRIMARY KEY (deployment_id, idempotency_key);
COMMENT ON TABLE flow_run_idempotency_keys IS 'Idempotency keys given when creating runs: a create repeated with the same key for the same deployment returns the run the first one created.';

DELETE FROM idempotency_keys a USING idempotency_keys b
WHERE a.key = b.key AND (a.created_at, a.actor) > (b.created_at, b.actor);
ALTER TABLE idempotency_keys DROP COLUMN actor;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (key);
COMMENT ON TABLE idempotency_keys IS 'The first response to each POST sent with an Idempotency-Key header; a retry with the same key gets it again instead of repeating the command.';
