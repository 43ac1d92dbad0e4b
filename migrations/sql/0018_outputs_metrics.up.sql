-- The data plane in the read models: the files a task run left (its
-- outputs, stored in the blob store) and the metrics it reported, and on
-- each flow run the union of its task runs' metrics.
ALTER TABLE task_runs
    ADD COLUMN outputs jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN metrics jsonb NOT NULL DEFAULT '{}';
ALTER TABLE flow_runs
    ADD COLUMN metrics jsonb NOT NULL DEFAULT '{}';

COMMENT ON COLUMN task_runs.outputs IS 'Files of the attempt that completed the task run, or of its cache source: a JSON list of {name, sha256, size, media_type}; the bytes are in the blob store under sha256.';
COMMENT ON COLUMN task_runs.metrics IS 'Metrics the task run reported (JSON object of name -> number); {} when none.';
COMMENT ON COLUMN flow_runs.metrics IS 'Metrics of the run: the union of its task runs'' metrics, a later completion winning a name two tasks report; {} when none.';

-- A deployment's metric series (GET /deployments/{id}/metrics, the chart on
-- the deployment page) reads its newest runs that have metrics.
CREATE INDEX flow_runs_deployment_metrics_idx ON flow_runs (deployment_id, scheduled_at DESC, id DESC) WHERE metrics <> '{}';
COMMENT ON INDEX flow_runs_deployment_metrics_idx IS 'Runs of a deployment that have metrics, newest first, for its metric series.';

-- For people in pgadmin: every output of every task run, one row each.
CREATE VIEW task_run_outputs AS
SELECT t.flow_run_id, t.id AS task_run_id, t.task_name, o.name, o.sha256, o.size, o.media_type, t.ended_at
FROM task_runs t, jsonb_to_recordset(t.outputs) AS o(name text, sha256 text, size bigint, media_type text);
COMMENT ON VIEW task_run_outputs IS 'Outputs of task runs, one row per file (name relative to the task''s ORDO_OUTPUT_DIR, sha256 addresses the blob).';
