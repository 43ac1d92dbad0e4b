package automations

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/riverjob"
)

// sweepSQL ends the deliveries left pending by a job River finished without
// their worker recording it: a job rescued as stuck (its server killed
// mid-attempt) after its last attempt is discarded with no word to the
// worker, and a job cancelled from outside never reaches it. The attempt
// that was cut off is recorded, and the delivery is dead (retry it).
// River's index on (state, finalized_at) finds the finished jobs.
var sweepSQL = `
WITH cut AS (
    SELECT d.firing_id, d.action, j.attempt, 'the attempt was cut off: ' || j.error AS error
    FROM (` + riverjob.EndedUnworkedSQL(`'`+KindDelivery+`'`) + `) j
    JOIN automation_deliveries d ON d.firing_id = (j.args->>'firing_id')::uuid AND d.action = (j.args->>'action')::int
    WHERE d.status = 'pending'
    FOR UPDATE OF d SKIP LOCKED
), attempts AS (
    INSERT INTO automation_delivery_attempts (firing_id, action, attempt, status_code, latency_ms, error)
    SELECT firing_id, action, attempt, NULL, 0, error FROM cut WHERE attempt > 0
    ON CONFLICT DO NOTHING
)
UPDATE automation_deliveries d
SET status = 'dead', attempts = greatest(d.attempts, cut.attempt), last_status_code = NULL, last_error = cut.error, updated_at = now()
FROM cut WHERE d.firing_id = cut.firing_id AND d.action = cut.action`

// Sweeper ends, as dead, the deliveries whose job River finished without
// them (see sweepSQL), so that every delivery ends. Every server runs one;
// they do not get in each other's way.
type Sweeper struct {
	pool *pgxpool.Pool
	opts SweeperOptions
}

// SweeperOptions tune a Sweeper.
type SweeperOptions struct {
	// Interval between sweeps. Defaults to 30s.
	Interval time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// NewSweeper returns a Sweeper on pool.
func NewSweeper(pool *pgxpool.Pool, opts SweeperOptions) *Sweeper {
	if opts.Interval <= 0 {
		opts.Interval = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Sweeper{pool: pool, opts: opts}
}

// Run sweeps every Interval until ctx ends.
func (s *Sweeper) Run(ctx context.Context) error {
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		if n, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.opts.Logger.Warn("sweep automation deliveries", "err", err)
		} else if n > 0 {
			s.opts.Logger.Warn("deliveries whose last attempt was cut off are dead", "count", n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Sweep ends the deliveries left pending by a finished job, and returns
// how many.
func (s *Sweeper) Sweep(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx, sweepSQL)
	if err != nil {
		return 0, fmt.Errorf("sweep deliveries: %w", err)
	}
	return tag.RowsAffected(), nil
}
