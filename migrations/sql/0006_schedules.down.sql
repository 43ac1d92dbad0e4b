DROP VIEW IF EXISTS deployment_concurrency;
DROP TABLE IF EXISTS deployment_run_slots;
DROP TABLE IF EXISTS scheduled_runs;
DROP TABLE IF EXISTS deployment_schedules;
