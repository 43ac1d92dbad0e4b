package eventstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/ordoflow/ordo/domain"
)

// Checkpoint is a place in the global log: the last event read, by its
// transaction id and position. The zero Checkpoint is the start of the log.
//
// The log is read in (transaction id, position) order rather than by
// position alone, because positions are taken when a transaction inserts,
// not when it commits: a reader that only remembered the highest position
// would skip an event whose transaction commits after a later one.
type Checkpoint struct {
	TransactionID uint64 `json:"transaction_id"`
	Position      int64  `json:"position"`
}

// CheckpointOf returns the checkpoint just after env.
func CheckpointOf(env domain.Envelope) Checkpoint {
	return Checkpoint{TransactionID: env.TransactionID, Position: env.Position}
}

// String encodes the checkpoint as "txid-position", for cursors.
func (c Checkpoint) String() string {
	return strconv.FormatUint(c.TransactionID, 10) + "-" + strconv.FormatInt(c.Position, 10)
}

// ParseCheckpoint reads a checkpoint written by String.
func ParseCheckpoint(s string) (Checkpoint, error) {
	tx, pos, ok := strings.Cut(s, "-")
	if !ok {
		return Checkpoint{}, fmt.Errorf("checkpoint %q is not TXID-POSITION", s)
	}
	t, err1 := strconv.ParseUint(tx, 10, 64)
	p, err2 := strconv.ParseInt(pos, 10, 64)
	if err1 != nil || err2 != nil || p < 0 {
		return Checkpoint{}, fmt.Errorf("checkpoint %q is not TXID-POSITION", s)
	}
	return Checkpoint{TransactionID: t, Position: p}, nil
}

// readAllSQL reads the stable prefix of the log after a checkpoint: only
// events whose transaction id is below the oldest transaction that may still
// append to the log (events_stable_xmin, migration 0016: one running in
// this database). Those transactions have ended, so no event can appear
// before the ones returned. A long-running transaction of this database
// that has written anything holds the reader back until it ends; one of
// another database does not.
const readAllSQL = `
SELECT ` + selectColumns + `
FROM events
WHERE (transaction_id, position) > ($1::text::xid8, $2)
  AND transaction_id < (SELECT events_stable_xmin())
ORDER BY events.transaction_id, events.position
LIMIT $3`

// ReadAll returns up to limit events of the global log after checkpoint,
// gap-free: every event it will ever return later sorts after these.
func (s *Store) ReadAll(ctx context.Context, q Querier, after Checkpoint, limit int) ([]domain.Envelope, error) {
	rows, err := q.Query(ctx, readAllSQL, strconv.FormatUint(after.TransactionID, 10), after.Position, limit)
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	return s.scan(rows)
}

// Lag counts the events of the log after a checkpoint, committed or not yet
// readable: how far a reader at that checkpoint is behind.
func (s *Store) Lag(ctx context.Context, q Querier, after Checkpoint) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, `
SELECT count(*) FROM events
WHERE (transaction_id, position) > ($1::text::xid8, $2)`, strconv.FormatUint(after.TransactionID, 10), after.Position).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("measure lag: %w", err)
	}
	return n, nil
}
