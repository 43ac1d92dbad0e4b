package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// DueTimer makes scheduled task run jobs available at their time.
//
// River moves scheduled jobs to available only every 5 seconds, so a retry
// delay of 1 s would become up to 6 s and a run due at 10:05:00 would start
// up to 10:05:05. The timer sleeps until the earliest scheduled_at among
// scheduled ordo.task_run jobs, then sets the due ones available and sends
// River's insert notification for their queues (NOTIFY
// "<schema>.river_insert" with {"queue": NAME}), which wakes the producers
// of every worker on those queues at once. It wakes early when told of a
// nearer job (Wake) and re-reads the next due time every PollInterval, so
// jobs inserted by other processes are found too.
//
// Several timers may run against one database (one per worker and server):
// making a job available is idempotent.
type DueTimer struct {
	pool *pgxpool.Pool
	opts DueTimerOptions
	wake chan struct{}
	last time.Time // database time of the last tick
}

// DueTimerOptions tune a DueTimer.
type DueTimerOptions struct {
	// PollInterval is the longest the timer sleeps without reading the next
	// due time: how late a job inserted by another process without waking
	// this timer can be. Defaults to 500ms.
	PollInterval time.Duration
	// Logger receives errors. Defaults to slog.Default().
	Logger *slog.Logger
}

// NewDueTimer returns a timer; Run runs it.
func NewDueTimer(pool *pgxpool.Pool, opts DueTimerOptions) *DueTimer {
	if opts.PollInterval <= 0 {
		opts.PollInterval = 500 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &DueTimer{pool: pool, opts: opts, wake: make(chan struct{}, 1)}
}

// Wake makes the timer read the next due time now: call it after inserting
// a scheduled job, once the transaction committed.
func (d *DueTimer) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// promoteDueSQL makes due scheduled jobs available, and wakes River's
// producers of the queues that got due jobs: those it moved, and those River's
// own scheduler had already made available ahead of time (it moves jobs due
// in the next 5 s, which then wait for a producer's poll) whose time came
// since the last tick ($2). The notifications go out when the statement
// commits. It returns the database's time, the next tick's $2.
const promoteDueSQL = `
WITH moved AS (
    UPDATE river_job SET state = 'available'
    WHERE state = 'scheduled' AND kind = $1 AND scheduled_at <= now()
    RETURNING queue
), became_due AS (
    SELECT queue FROM river_job
    WHERE state = 'available' AND kind = $1 AND scheduled_at > $2 AND scheduled_at <= now()
), queues AS (
    SELECT queue FROM moved UNION SELECT queue FROM became_due
)
SELECT count(pg_notify(current_schema() || '.river_insert', json_build_object('queue', queue)::text)), now()
FROM queues`

// nextDueSQL returns how long until the next job is due, by the database's
// clock (NULL when none waits).
const nextDueSQL = `
SELECT extract(epoch FROM min(scheduled_at) - clock_timestamp())::float8
FROM river_job WHERE state IN ('scheduled', 'available') AND kind = $1 AND scheduled_at > now()`

// Run works until ctx ends. Database errors are logged and retried.
func (d *DueTimer) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		sleep, err := d.tick(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d.opts.Logger.Error("due timer", "err", err)
			sleep = d.opts.PollInterval
		}
		timer.Reset(sleep)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// tick makes due jobs available and returns how long to sleep.
func (d *DueTimer) tick(ctx context.Context) (time.Duration, error) {
	var queues int
	if err := d.pool.QueryRow(ctx, promoteDueSQL, KindTaskRun, d.last).Scan(&queues, &d.last); err != nil {
		return 0, fmt.Errorf("make due jobs available: %w", err)
	}
	if queues > 0 {
		d.opts.Logger.Debug("due timer made jobs available", "queues", queues)
	}
	var secs *float64
	if err := d.pool.QueryRow(ctx, nextDueSQL, KindTaskRun).Scan(&secs); err != nil {
		return 0, fmt.Errorf("read next due time: %w", err)
	}
	if secs == nil {
		return d.opts.PollInterval, nil
	}
	next := time.Duration(*secs * float64(time.Second))
	return max(min(next, d.opts.PollInterval), 0), nil
}
