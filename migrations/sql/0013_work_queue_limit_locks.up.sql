-- Saving a work queue's concurrency limit and recording attempt starts on
-- that queue exclude each other. Every transaction of starts holds a shared
-- lock on its queues; a save takes the queue's lock alone, then stamps
-- work_queues.updated_at with the time it got it. So an attempt that started
-- without a slot either committed before that time, and counts against the
-- new limit (work_queue_slots_in_use), or starts after the save and sees
-- the limit. Without the lock, a start that read "no limit" and committed
-- just after a save could run uncounted. The locks are transaction-level
-- advisory locks: nothing is written, and no row needs to exist yet.
CREATE FUNCTION lock_work_queues_for_starts(queues text[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1869768559, hashtext(q)) FROM unnest(queues) AS q ORDER BY q;
END $$;
COMMENT ON FUNCTION lock_work_queues_for_starts(text[]) IS 'Shared transaction lock on work queues, held by every transaction that records attempt starts on them.';

CREATE FUNCTION lock_work_queue_for_save(queue text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1869768559, hashtext(queue));
END $$;
COMMENT ON FUNCTION lock_work_queue_for_save(text) IS 'Exclusive transaction lock on a work queue, held while its settings are saved.';
