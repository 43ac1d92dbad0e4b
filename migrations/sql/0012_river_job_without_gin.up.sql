-- River indexes every job's args and metadata with GIN indexes, for
-- containment queries (args @> ...). Ordo never asks those: it finds a run's
-- queued jobs by river_job_ordo_flow_run_idx. Yet every job writes three
-- row versions (queued, running, completed), and each version writes GIN
-- entries for every key and value of its args: a third of a task's index
-- writes. Dropping them makes each task cheaper to run.
DROP INDEX IF EXISTS river_job_args_index;
DROP INDEX IF EXISTS river_job_metadata_index;
