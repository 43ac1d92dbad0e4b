-- The stable prefix of the log ends below the oldest transaction that may
-- still append to it. pg_snapshot_xmin(pg_current_snapshot()) is the oldest
-- transaction running anywhere on the server, in every database: a long
-- transaction in another database (another application, an open session in
-- pgadmin) held Ordo's readers back until it ended. A transaction runs in
-- one database only, so one known to be running in another database never
-- appends to this log and is passed over. A transaction that is not known
-- to run elsewhere (this database's, or one that ended since the snapshot)
-- still bounds the prefix, as before.
CREATE FUNCTION events_stable_xmin() RETURNS xid8
LANGUAGE sql STABLE AS $$
SELECT coalesce(
    (SELECT min(x) FROM pg_snapshot_xip(pg_current_snapshot()) AS x
     WHERE x::xid NOT IN (
         SELECT l.transactionid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted
           AND l.transactionid IS NOT NULL
           AND a.datid <> (SELECT oid FROM pg_database WHERE datname = current_database()))),
    pg_snapshot_xmax(pg_current_snapshot()))
$$;

COMMENT ON FUNCTION events_stable_xmin() IS 'The transaction id below which the event log can no longer change: the oldest transaction that may still append to it (running in this database, or not known to run in another), else the snapshot''s xmax. Readers of the global log read only events whose transaction_id is below it.';
