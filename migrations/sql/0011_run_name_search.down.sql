DROP INDEX IF EXISTS flow_runs_name_trgm_idx;
-- pg_trgm stays: other objects of the database may use it.
