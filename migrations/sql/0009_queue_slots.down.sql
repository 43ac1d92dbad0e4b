DROP VIEW IF EXISTS work_queue_concurrency;
DROP FUNCTION IF EXISTS work_queue_slots_in_use(text, timestamptz, bigint[]);
DROP TABLE IF EXISTS work_queue_slots;
