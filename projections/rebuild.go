package projections

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/eventstore"
)

// Rebuild replays the read models from the start of the log with Replay's
// defaults and returns the number of events applied.
func Rebuild(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store) (int, error) {
	res, err := Replay(ctx, pool, store, ReplayOptions{})
	return int(res.Events), err
}

func joinIdents(names []string) string {
	s := ""
	for i, n := range names {
		if i > 0 {
			s += ", "
		}
		s += pgx.Identifier{n}.Sanitize()
	}
	return s
}
