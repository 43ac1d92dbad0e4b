package eventstore

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// The only removal from the log is ordo prune's, of archived streams; these
// are its steps, each inside the pruning transaction.

// LockAppends holds the log against appends until tx ends; reads go on.
// Appends that wait find, after a commit that removed their streams, their
// expected version gone, and fail as conflicts.
func (s *Store) LockAppends(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return fmt.Errorf("lock the events table: %w", err)
	}
	return nil
}

// StreamSize is how far a stream is: its version and how many events it
// holds.
type StreamSize struct {
	Version int64
	Count   int64
}

// StreamSizes returns the size of each of the streams that has events;
// others are left out.
func (s *Store) StreamSizes(ctx context.Context, q Querier, streamIDs []uuid.UUID) (map[uuid.UUID]StreamSize, error) {
	rows, err := q.Query(ctx, `SELECT stream_id, max(version), count(*) FROM events WHERE stream_id = ANY($1) GROUP BY stream_id`, streamIDs)
	if err != nil {
		return nil, fmt.Errorf("measure %d streams: %w", len(streamIDs), err)
	}
	out := make(map[uuid.UUID]StreamSize, len(streamIDs))
	var (
		id   uuid.UUID
		size StreamSize
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &size.Version, &size.Count}, func() error {
		out[id] = size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("measure %d streams: %w", len(streamIDs), err)
	}
	return out, nil
}

// StreamVersion returns the version of a stream: 0 when it has no events.
func (s *Store) StreamVersion(ctx context.Context, q Querier, streamID uuid.UUID) (int64, error) {
	var v int64
	if err := q.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1`, streamID).Scan(&v); err != nil {
		return 0, fmt.Errorf("read the version of stream %s: %w", streamID, err)
	}
	return v, nil
}

// DeleteStreams removes every event of the streams and returns how many
// it removed. The log's trigger refuses any other removal: tx first marks
// itself as the pruning transaction (migration 0008), for its own
// lifetime only.
func (s *Store) DeleteStreams(ctx context.Context, tx pgx.Tx, streamIDs []uuid.UUID) (int64, error) {
	if _, err := tx.Exec(ctx, `SELECT set_config('ordo.pruning', pg_current_xact_id()::text, true)`); err != nil {
		return 0, fmt.Errorf("delete streams: %w", err)
	}
	tag, err := tx.Exec(ctx, `DELETE FROM events WHERE stream_id = ANY($1)`, streamIDs)
	if err != nil {
		return 0, fmt.Errorf("delete streams: %w", err)
	}
	return tag.RowsAffected(), nil
}
