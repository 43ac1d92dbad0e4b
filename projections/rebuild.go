package projections

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/eventstore"
)

// readModelTables are the tables the projector fills, emptied by Rebuild.
var readModelTables = []string{"deployments", "flow_runs", "task_runs", "task_run_attempts", "state_history"}

// Rebuild throws the read models away and applies the whole log again
// (replay), into the same tables. It returns the number of events applied.
// A projector running meanwhile notices that its checkpoint moved and starts
// over from wherever the rebuild got to.
func Rebuild(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store) (int, error) {
	return rebuild(ctx, pool, store, ProjectorOptions{BatchSize: 10000})
}

func rebuild(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store, opts ProjectorOptions) (int, error) {
	p, err := NewProjector(store, opts)
	if err != nil {
		return 0, err
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `TRUNCATE `+joinIdents(readModelTables)); err != nil {
			return fmt.Errorf("empty read models: %w", err)
		}
		_, err := tx.Exec(ctx, `
INSERT INTO projection_checkpoints (name) VALUES ($1)
ON CONFLICT (name) DO UPDATE SET transaction_id = '0', position = 0, updated_at = now()`, ReadModels)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("reset read models: %w", err)
	}
	return p.CatchUp(ctx)
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
