package eventstore

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// OutputDigests calls fn once for every digest that the outputs
// (data.outputs[].sha256) of an event of one of the types name, leaving out
// the events of the streams in exclude. ordo prune keeps the blobs it
// names. It only reads: run it in a read-only transaction to read other
// tables in the same snapshot.
func (s *Store) OutputDigests(ctx context.Context, q Querier, types []string, exclude []uuid.UUID, fn func(digest string) error) error {
	if exclude == nil {
		exclude = []uuid.UUID{} // NULL would make every comparison unknown
	}
	rows, err := q.Query(ctx, `
SELECT DISTINCT jsonb_path_query(data, '$.outputs[*].sha256') #>> '{}' FROM events
WHERE type = ANY($1) AND NOT (stream_id = ANY($2))`, types, exclude)
	if err != nil {
		return fmt.Errorf("read the digests the log names: %w", err)
	}
	var d string
	if _, err := pgx.ForEachRow(rows, []any{&d}, func() error { return fn(d) }); err != nil {
		return fmt.Errorf("read the digests the log names: %w", err)
	}
	return nil
}
