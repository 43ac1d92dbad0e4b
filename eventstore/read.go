package eventstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

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

// readBetweenSQL reads the log after one checkpoint up to another.
const readBetweenSQL = `
SELECT ` + selectColumns + `
FROM events
WHERE (transaction_id, position) > ($1::text::xid8, $2)
  AND (transaction_id, position) <= ($3::text::xid8, $4)
ORDER BY events.transaction_id, events.position
LIMIT $5`

// ReadBetween returns up to limit events of the global log after after and
// up to upTo, which must lie in the stable prefix of the log: a checkpoint
// that StableHead or ReadAll returned. That prefix no longer changes, so
// the read does not bound itself by the oldest running transaction again.
// Doing so could return less than upTo: a transaction of another database
// that ends between the statement's snapshot and its look at pg_locks is
// no longer known to run elsewhere, and bounds that statement's prefix as
// if it could still append here (see events_stable_xmin).
func (s *Store) ReadBetween(ctx context.Context, q Querier, after, upTo Checkpoint, limit int) ([]domain.Envelope, error) {
	rows, err := q.Query(ctx, readBetweenSQL, strconv.FormatUint(after.TransactionID, 10), after.Position,
		strconv.FormatUint(upTo.TransactionID, 10), upTo.Position, limit)
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

// logRowsSQL reads the whole stable prefix of the log in order.
const logRowsSQL = `
SELECT ` + selectColumns + `
FROM events
WHERE transaction_id < (SELECT events_stable_xmin())
ORDER BY events.transaction_id, events.position`

// LogRows returns the whole stable prefix of the log, in log order, as
// undecoded rows of position, transaction id (bigint), stream id, stream
// type, version, type, data, metadata and recorded_at: for a reader of
// millions of events (replay) that decodes the rows' raw values itself. The
// caller closes the rows.
func (s *Store) LogRows(ctx context.Context, q Querier) (pgx.Rows, error) {
	rows, err := q.Query(ctx, logRowsSQL)
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	return rows, nil
}

// PositionSpan returns how many positions the log spans, first to last (0
// when empty): an upper bound of its events, read from the index alone.
func (s *Store) PositionSpan(ctx context.Context, q Querier) (int64, error) {
	var n int64
	if err := q.QueryRow(ctx, `SELECT coalesce(max(position) - min(position) + 1, 0) FROM events`).Scan(&n); err != nil {
		return 0, fmt.Errorf("measure the log: %w", err)
	}
	return n, nil
}

// taskRunFlowRunsSQL reads the flow run of task runs from their first event
// (TaskRunCreated), by the unique (stream_id, version) index.
const taskRunFlowRunsSQL = `
SELECT stream_id, data->>'flow_run_id' FROM events
WHERE stream_id = ANY($1) AND version = 1 AND type = 'TaskRunCreated'`

// TaskRunFlowRuns returns the flow run of each of the task runs that has
// been created; others are left out.
func (s *Store) TaskRunFlowRuns(ctx context.Context, q Querier, taskRunIDs []uuid.UUID) (map[uuid.UUID]uuid.UUID, error) {
	ids := make([][16]byte, len(taskRunIDs))
	for i, id := range taskRunIDs {
		ids[i] = id
	}
	rows, err := q.Query(ctx, taskRunFlowRunsSQL, ids)
	if err != nil {
		return nil, fmt.Errorf("read task runs' flow runs: %w", err)
	}
	out := make(map[uuid.UUID]uuid.UUID, len(taskRunIDs))
	var (
		id   uuid.UUID
		flow string
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &flow}, func() error {
		if f, err := uuid.Parse(flow); err == nil {
			out[id] = f
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read task runs' flow runs: %w", err)
	}
	return out, nil
}
