package eventstore

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
)

// A failover to an asynchronous standby (or a restore from a backup) gives
// the database a history without its last commits: events an Ordo process
// saw committed are gone, and later ones may take their places in the log.
// What a process keeps in memory from the old history (folded states, a
// batch of events read but not yet applied) must then not be used. Every
// new connection of a pool set up by ConfigurePool notes which history it
// reached (the cluster's system identifier and its WAL timeline, which a
// promotion or a restore changes), and HistoryEpoch moves on when that
// changes: after a failover every connection is new, so the first one to
// the new primary moves it before anything is read there.

var history struct {
	mu    sync.Mutex
	seen  string
	epoch atomic.Uint64
}

// HistoryEpoch counts the changes of database history this process saw.
// Memory derived from the log is good only while the epoch it was read at
// is the current one.
func HistoryEpoch() uint64 { return history.epoch.Load() }

// historySQL names the history a connection reached: empty on a standby.
const historySQL = `
SELECT CASE WHEN pg_is_in_recovery() THEN ''
    ELSE (SELECT system_identifier::text FROM pg_control_system()) || '/' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END`

// noteHistory reads the history conn reached and moves the epoch when it
// differs from the last one seen. A connection that cannot tell (an older
// server, no privilege) notes nothing.
func noteHistory(ctx context.Context, conn *pgx.Conn) {
	var h string
	if err := conn.QueryRow(ctx, historySQL).Scan(&h); err != nil || h == "" {
		return
	}
	noteHistoryName(h)
}

func noteHistoryName(h string) {
	history.mu.Lock()
	defer history.mu.Unlock()
	if history.seen != "" && history.seen != h {
		history.epoch.Add(1)
	}
	history.seen = h
}
