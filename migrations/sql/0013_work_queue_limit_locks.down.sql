DROP FUNCTION IF EXISTS lock_work_queue_for_save(text);
DROP FUNCTION IF EXISTS lock_work_queues_for_starts(text[]);
