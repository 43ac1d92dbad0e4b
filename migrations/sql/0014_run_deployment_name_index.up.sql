-- GET /runs?deployment=NAME filters on the name a run was created under.
-- Without an index on it, a deployment with few runs among many scans the
-- whole table; with it, any deployment's page is read in order.
CREATE INDEX flow_runs_deployment_name_idx ON flow_runs (deployment_name, scheduled_at DESC, id DESC);
COMMENT ON INDEX flow_runs_deployment_name_idx IS 'Runs of a deployment by name, newest first, for the deployment filter of GET /runs.';
