DROP VIEW IF EXISTS task_run_outputs;
DROP INDEX IF EXISTS flow_runs_deployment_metrics_idx;
ALTER TABLE flow_runs DROP COLUMN IF EXISTS metrics;
ALTER TABLE task_runs DROP COLUMN IF EXISTS outputs, DROP COLUMN IF EXISTS metrics;
