package automations

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/riverjob"
)

// RescueEvery is how often RunRescuer looks for deliveries left running by
// a server that stopped mid-attempt.
const RescueEvery = 10 * time.Second

// riverRescueAfter is the delivery client's River rescue horizon. River's
// leader, which may be any server's or worker's client, rescues the jobs
// of every queue with its own horizon, and a task's job runs as long as
// its task: a short horizon here would have a server's client rescue, and
// run again, every task running longer than it. So it is the workers'
// (jobs.WorkerOptions.RescueStuckJobsAfter's default), and deliveries are
// rescued by RunRescuer instead.
const riverRescueAfter = 8 * 24 * time.Hour

// RunRescuer makes deliveries that have been running longer than
// opts.RescueAfter() (longer than any live attempt can last) available
// again, every RescueEvery, until ctx ends; one whose last attempt was
// its last is dead. Every server runs it: a job is moved once, by whichever
// gets to it.
func RunRescuer(ctx context.Context, pool *pgxpool.Pool, opts DeliveryOptions) error {
	opts.setDefaults()
	t := time.NewTicker(RescueEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if n, err := RescueStuckDeliveries(ctx, pool, opts.RescueAfter()); err != nil && ctx.Err() == nil {
			opts.Logger.Warn("rescue stuck webhook deliveries", "err", err)
		} else if n > 0 {
			opts.Logger.Info("rescued webhook deliveries left running by a stopped server", "deliveries", n)
		}
	}
}

// RescueStuckDeliveries moves the delivery jobs running for longer than
// after back to available, or to discarded (and their delivery to dead)
// when their attempts are spent, and returns how many it moved.
func RescueStuckDeliveries(ctx context.Context, pool *pgxpool.Pool, after time.Duration) (int64, error) {
	var n int64
	err := pool.QueryRow(ctx, `
WITH stuck AS (
    `+riverjob.RescueStuckSQL("$1", "$2", "$3", "'its server stopped during the attempt'")+`
), dead AS (
    UPDATE automation_deliveries d SET status = 'dead', last_error = 'its server stopped during the last attempt', updated_at = now()
    FROM stuck WHERE stuck.state = 'discarded' AND d.firing_id = (stuck.args->>'firing_id')::uuid AND d.action = (stuck.args->>'action')::int
)
SELECT count(*) FROM stuck`, KindDelivery, QueueAutomations, after.Seconds()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("rescue stuck deliveries: %w", err)
	}
	return n, nil
}
