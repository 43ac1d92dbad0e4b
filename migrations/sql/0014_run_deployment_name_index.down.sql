DROP INDEX IF EXISTS flow_runs_deployment_name_idx;
