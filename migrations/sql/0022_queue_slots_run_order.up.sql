-- Waiting attempts of a limited work queue are served by their flow run's
-- due time first, then by when they asked for a slot: a run's later tasks
-- (a join, a retry) ask only once the earlier ones ended, and would
-- otherwise queue behind every run that became due meanwhile.

ALTER TABLE work_queue_slots ADD COLUMN run_at timestamptz;
UPDATE work_queue_slots SET run_at = created_at;
ALTER TABLE work_queue_slots ALTER COLUMN run_at SET NOT NULL;
DROP INDEX work_queue_slots_queue_idx;
CREATE INDEX work_queue_slots_queue_idx ON work_queue_slots (queue, state, run_at, created_at);

COMMENT ON COLUMN work_queue_slots.run_at IS 'When the attempt''s flow run was due (its scheduled_at): waiting attempts are granted slots in this order, then by created_at.';
COMMENT ON COLUMN work_queue_slots.created_at IS 'When the attempt first asked for a slot (the statement that inserted the row, under the queue''s lock): the order of the waiting attempts of one run, or of runs due at the same time.';
COMMENT ON TABLE work_queue_slots IS 'Task run attempts of work queues that have a concurrency_limit: those that hold a slot (granted, held) and those that wait for one. A worker takes a slot in the transaction that records TaskRunStarted and frees it in the one that records the outcome. An attempt that finds no slot free records nothing in the log: its River job is completed and a new one, scheduled for later, carries the attempt; when a slot frees it is granted to the waiting attempt whose run was due first (run_at, then created_at) and that job is made available at once. The reaper frees the slots of dead workers and of jobs that ended. Changed only while holding the queue''s work_queues row lock (FOR NO KEY UPDATE).';
