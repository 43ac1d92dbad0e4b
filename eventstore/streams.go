package eventstore

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Reads of streams' heads that other packages need, either as functions or,
// where the read is part of a statement on their own tables, as SQL
// fragments that keep the statement one round trip.

// LastTypeSQL is an expression: the type of the last event of the stream
// whose id the expression stream gives, ” when it has none.
func LastTypeSQL(stream string) string {
	return `coalesce((SELECT e.type FROM events e WHERE e.stream_id = ` + stream + ` ORDER BY e.version DESC LIMIT 1), '')`
}

// VersionSQL is an expression: the version of the stream whose id the
// expression stream gives, 0 when it has no event.
func VersionSQL(stream string) string {
	return `coalesce((SELECT max(e.version) FROM events e WHERE e.stream_id = ` + stream + `), 0)`
}

// ExistsSQL is a condition: the stream whose id the expression stream
// gives has events.
func ExistsSQL(stream string) string {
	return `EXISTS (SELECT 1 FROM events e WHERE e.stream_id = ` + stream + `)`
}

// LastOfTypes returns, for each of streams that has an event of one of
// types, the type of the last such event.
func LastOfTypes(ctx context.Context, q Querier, streams []uuid.UUID, types []string) (map[uuid.UUID]string, error) {
	rows, err := q.Query(ctx, `
SELECT DISTINCT ON (stream_id) stream_id, type FROM events
WHERE stream_id = ANY($1) AND type = ANY($2)
ORDER BY stream_id, version DESC`, streams, types)
	if err != nil {
		return nil, fmt.Errorf("read last events: %w", err)
	}
	last := map[uuid.UUID]string{}
	var (
		id  uuid.UUID
		typ string
	)
	if _, err := pgx.ForEachRow(rows, []any{&id, &typ}, func() error {
		last[id] = typ
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read last events: %w", err)
	}
	return last, nil
}
