package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ordoflow/ordo/riverjob"
)

// DueTimer makes scheduled task run jobs available at their time, rather
// than up to 5 s later at River's own scheduler's next pass; see the
// package doc.
type DueTimer struct {
	pool *pgxpool.Pool
	opts DueTimerOptions
	wake chan struct{}
	last time.Time // database time of the last tick
	// sleepsUntil is when the timer looks next, in Unix microseconds of this
	// process's clock; 0 while it ticks. A job due later needs no wake-up:
	// the timer never sleeps longer than PollInterval.
	sleepsUntil atomic.Int64

	// observe, when set (by tests), hears "listening" once the timer
	// listens, "sleep" before each sleep, "woken" when a wake-up ends a
	// sleep (or the first one, when it came during a tick), and "heard:
	// woke" or "heard: not needed" for each notification of a due time.
	observe func(event string)
}

func (d *DueTimer) observed(event string) {
	if d.observe != nil {
		d.observe(event)
	}
}

// DueTimerOptions tune a DueTimer.
type DueTimerOptions struct {
	// PollInterval is the longest the timer sleeps without reading the next
	// due time, a safety net: jobs queued for later wake it when their
	// transaction commits. Defaults to 500ms.
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

// WakeAt tells the timer that a job due at at was queued, once the
// transaction committed: it reads the next due time now unless it will
// look again before at anyway.
func (d *DueTimer) WakeAt(at time.Time) { d.wakeAt(at) }

// wakeAt is WakeAt, reporting whether it woke the timer.
func (d *DueTimer) wakeAt(at time.Time) bool {
	if until := d.sleepsUntil.Load(); until != 0 && at.UnixMicro() >= until {
		return false
	}
	d.Wake()
	return true
}

// Wake makes the timer read the next due time now.
func (d *DueTimer) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run works until ctx ends. Database errors are logged and retried.
func (d *DueTimer) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	listening := make(chan struct{})
	go func() { defer close(listening); d.listen(ctx) }()
	defer func() { cancel(); <-listening }()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		d.sleepsUntil.Store(0) // awake: every job queued now wakes it again
		sleep, err := d.tick(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d.opts.Logger.Error("due timer", "err", err)
			sleep = d.opts.PollInterval
		}
		timer.Reset(sleep)
		d.sleepsUntil.Store(time.Now().Add(sleep).UnixMicro())
		d.observed("sleep")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.wake:
			d.observed("woken")
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
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		moved, now, err := riverjob.PromoteDue(ctx, tx)
		if err != nil {
			return err
		}
		if queues, err = riverjob.NotifyBecameDue(ctx, tx, d.last, moved, now); err != nil {
			return err
		}
		d.last = now
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("make due jobs available: %w", err)
	}
	if queues > 0 {
		d.opts.Logger.Debug("due timer made jobs available", "queues", queues)
	}
	next, ok, err := riverjob.NextDue(ctx, d.pool)
	if err != nil {
		return 0, fmt.Errorf("read next due time: %w", err)
	}
	if !ok {
		return d.opts.PollInterval, nil
	}
	return max(min(next, d.opts.PollInterval), 0), nil
}

// listen wakes the timer on every notification of riverjob.DueChannel until ctx ends,
// reconnecting after a lost connection.
func (d *DueTimer) listen(ctx context.Context) {
	for ctx.Err() == nil {
		err := d.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		d.opts.Logger.Warn("due timer lost its listening connection; reconnecting", "err", err, "in", d.opts.PollInterval)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d.opts.PollInterval):
		}
	}
}

func (d *DueTimer) listenOnce(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, d.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	var schema string
	if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return fmt.Errorf("read the schema: %w", err)
	}
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{schema + "." + riverjob.DueChannel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// A job queued before LISTEN took effect is read now.
	d.observed("listening")
	d.Wake()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("wait for notifications: %w", err)
		}
		us, err := strconv.ParseInt(n.Payload, 10, 64)
		switch {
		case err != nil:
			d.Wake()
		case d.wakeAt(time.UnixMicro(us)):
			d.observed("heard: woke")
		default:
			d.observed("heard: not needed")
		}
	}
}
