package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
)

// Less reports whether c comes before other in log order.
func (c Checkpoint) Less(other Checkpoint) bool {
	if c.TransactionID != other.TransactionID {
		return c.TransactionID < other.TransactionID
	}
	return c.Position < other.Position
}

// Head returns the checkpoint of the last committed event in log order, and
// false when the log is empty. Events of transactions still open are not
// committed, so they are not counted; a reader waiting for Head may still
// wait for an older transaction to end (the log is read gap-free).
func (s *Store) Head(ctx context.Context, q Querier) (Checkpoint, bool, error) {
	var txid, pos int64
	err := q.QueryRow(ctx, `SELECT transaction_id::text::bigint, position FROM events ORDER BY events.transaction_id DESC, events.position DESC LIMIT 1`).Scan(&txid, &pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("read log head: %w", err)
	}
	return Checkpoint{TransactionID: uint64(txid), Position: pos}, true, nil
}

// stableHeadSQL finds the last event of the stable prefix of the log (see
// readAllSQL). Columns are qualified so that the order is the index's, not
// that of the bigint the select list casts them to.
const stableHeadSQL = `
SELECT transaction_id::text::bigint, position FROM events
WHERE transaction_id < (SELECT events_stable_xmin())
ORDER BY events.transaction_id DESC, events.position DESC
LIMIT 1`

// StableHead returns the checkpoint of the last event of the part of the
// log that can no longer change, and false when that part is empty. A
// reader that starts after it misses no event committed later; every
// event ReadAll returns later sorts after it.
func (s *Store) StableHead(ctx context.Context, q Querier) (Checkpoint, bool, error) {
	var txid, pos int64
	err := q.QueryRow(ctx, stableHeadSQL).Scan(&txid, &pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("read the stable head of the log: %w", err)
	}
	return Checkpoint{TransactionID: uint64(txid), Position: pos}, true, nil
}

// CheckpointAt returns the checkpoint of the event at position; a position
// that holds no event is a domain not-found error.
func (s *Store) CheckpointAt(ctx context.Context, q Querier, position int64) (Checkpoint, error) {
	var txid int64
	err := q.QueryRow(ctx, `SELECT transaction_id::text::bigint FROM events WHERE position = $1`, position).Scan(&txid)
	if errors.Is(err, pgx.ErrNoRows) {
		return Checkpoint{}, domain.Errorf(domain.CodeNotFound, "no event at position %d", position)
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("look up event %d: %w", position, err)
	}
	return Checkpoint{TransactionID: uint64(txid), Position: position}, nil
}

// StreamCheckpoint returns the checkpoint that covers the last event of a
// stream together with every other event its transaction appended: the
// last event of that transaction. A reader that has reached it has seen the
// whole of the last command that wrote to the stream (read-your-writes).
// It returns false for a stream with no events.
func (s *Store) StreamCheckpoint(ctx context.Context, q Querier, streamID uuid.UUID) (Checkpoint, bool, error) {
	var txid, pos int64
	err := q.QueryRow(ctx, `
SELECT e.transaction_id::text::bigint, e.position
FROM events e
WHERE e.transaction_id = (SELECT transaction_id FROM events WHERE stream_id = $1 ORDER BY version DESC LIMIT 1)
ORDER BY e.position DESC LIMIT 1`, streamID).Scan(&txid, &pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("look up the last write to stream %s: %w", streamID, err)
	}
	return Checkpoint{TransactionID: uint64(txid), Position: pos}, true, nil
}

// ReadFilter narrows a read of the global log.
type ReadFilter struct {
	// Types keeps only events of these types; empty keeps every type.
	Types []string
}

// readFilteredSQL is readAllSQL with a filter on event types.
const readFilteredSQL = `
SELECT ` + selectColumns + `
FROM events
WHERE (transaction_id, position) > ($1::text::xid8, $2)
  AND transaction_id < (SELECT events_stable_xmin())
  AND (cardinality($3::text[]) = 0 OR type = ANY($3))
ORDER BY events.transaction_id, events.position
LIMIT $4`

// ReadAllFiltered is ReadAll keeping only the events that f selects, read
// gap-free like ReadAll. Events are not decoded: Event is nil, Data holds
// the payload as stored. It serves readers that pass events on (the API's
// global log) and need not know every type.
func (s *Store) ReadAllFiltered(ctx context.Context, q Querier, after Checkpoint, f ReadFilter, limit int) ([]domain.Envelope, error) {
	types := f.Types
	if types == nil {
		types = []string{}
	}
	rows, err := q.Query(ctx, readFilteredSQL, strconv.FormatUint(after.TransactionID, 10), after.Position, types, limit)
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	return scanRaw(rows)
}

// LastEvent is the latest event of a stream, by its type and when it was
// recorded.
type LastEvent struct {
	Type       string
	RecordedAt time.Time
}

// LastEvents returns the latest event of each of the streams that has
// any; streams with no events are left out.
func (s *Store) LastEvents(ctx context.Context, q Querier, streamIDs []uuid.UUID) (map[uuid.UUID]LastEvent, error) {
	ids := make([][16]byte, len(streamIDs))
	for i, id := range streamIDs {
		ids[i] = id
	}
	rows, err := q.Query(ctx, `
SELECT DISTINCT ON (stream_id) stream_id, type, recorded_at
FROM events WHERE stream_id = ANY($1)
ORDER BY stream_id, version DESC`, ids)
	if err != nil {
		return nil, fmt.Errorf("read the last events of %d streams: %w", len(streamIDs), err)
	}
	out := make(map[uuid.UUID]LastEvent, len(streamIDs))
	var (
		id   [16]byte
		last LastEvent
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &last.Type, &last.RecordedAt}, func() error {
		out[id] = last
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the last events of %d streams: %w", len(streamIDs), err)
	}
	return out, nil
}
