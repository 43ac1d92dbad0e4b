-- Searching runs by part of their name (GET /runs?name=...) is a substring
-- match; without a trigram index, a rare name scans every run.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX flow_runs_name_trgm_idx ON flow_runs USING gin (name gin_trgm_ops);
COMMENT ON INDEX flow_runs_name_trgm_idx IS 'Trigrams of run names, for the name filter of GET /runs (ILIKE ''%part%'').';
