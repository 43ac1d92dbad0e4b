package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/bench/loggen"
	"github.com/ordoflow/ordo/projections"
)

// latenessLoadAppenders are the clients that append to the measured
// database's log while its runs are due.
const latenessLoadAppenders = 4

// backgroundLoad is what ScheduleLatenessUnderLoad ran beside the runs.
type backgroundLoad struct {
	appended atomic.Int64 // events appended to the measured database's log
	loaded   atomic.Int64 // synthetic events loaded into the other database
	replayed atomic.Int64 // events replayed there
	mu       sync.Mutex
	err      error
}

func (b *backgroundLoad) fail(ctx context.Context, err error) {
	if err == nil || ctx.Err() != nil {
		return // stopping the load is no failure
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil {
		b.err = err
	}
}

// ScheduleLatenessUnderLoad is ScheduleLateness on a busy server: while the
// runs are due, clients append events to the same database's log, and on
// another database of the same server a log of synthetic runs is loaded
// (replayEvents events, with COPY) and replayed, again and again. It
// returns the lateness, sorted, and the work the load did.
func ScheduleLatenessUnderLoad(ctx context.Context, env Env, runs, replayEvents int) ([]float64, *backgroundLoad, error) {
	other, err := newPool(ctx, env)
	if err != nil {
		return nil, nil, err
	}
	defer other.Close()
	bg := &backgroundLoad{}
	load := func(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store) {
		var wg sync.WaitGroup
		for range latenessLoadAppenders {
			wg.Go(func() { bg.fail(ctx, appendUntil(ctx, store, &bg.appended)) })
		}
		wg.Go(func() { bg.fail(ctx, replayUntil(ctx, env, other, replayEvents, bg)) })
		wg.Wait()
	}
	l, err := scheduleLateness(ctx, env, runs, load)
	if err != nil {
		return nil, nil, err
	}
	if bg.err != nil {
		return nil, nil, fmt.Errorf("background load: %w", bg.err)
	}
	return l, bg, nil
}

// appendUntil appends single-event transactions, as a busy server's commands
// do, until ctx ends.
func appendUntil(ctx context.Context, store *eventstore.Store, n *atomic.Int64) error {
	events := []domain.Event{domain.TaskRunStarted{Attempt: 1, Worker: "load"}}
	for ctx.Err() == nil {
		if _, err := store.AppendAlone(ctx, eventstore.Append{StreamID: uuid.Must(uuid.NewV7()), Events: events}); err != nil {
			return fmt.Errorf("append: %w", err)
		}
		n.Add(1)
	}
	return nil
}

// replayUntil loads events synthetic events into pool's database, then
// replays its log, again and again until ctx ends; each pass loads as many
// events again, so the log grows.
func replayUntil(ctx context.Context, env Env, pool *pgxpool.Pool, events int, bg *backgroundLoad) error {
	store := eventstore.New(pool, domain.NewRegistry())
	defer store.Close()
	gen := loggen.New()
	for pass := 1; ctx.Err() == nil; pass++ {
		env.logf("load: loading %s more synthetic events on another database", count(events))
		before := gen.Total
		if err := gen.Load(ctx, pool, gen.Total+events, nil); err != nil {
			return err
		}
		bg.loaded.Add(int64(gen.Total - before))
		env.logf("load: replaying %s events", count(gen.Total))
		res, err := projections.Replay(ctx, pool, store, projections.ReplayOptions{Logger: quiet})
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return fmt.Errorf("replay, pass %d: %w", pass, err)
		}
		bg.replayed.Add(res.Events)
	}
	return nil
}

func latenessLoadScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	sz := opts.Sizes
	began := time.Now()
	l, bg, err := ScheduleLatenessUnderLoad(ctx, env, sz.LatenessRuns, sz.ReplayEvents)
	if err != nil {
		return nil, err
	}
	took := time.Since(began).Seconds()
	p50, p99, worst := percentile(l, 0.5), percentile(l, 0.99), l[len(l)-1]
	return []Row{{
		What: fmt.Sprintf("schedule lateness under load, 1 s interval, %d runs (due time → first task running), while %d clients append to the same log and another database loads and replays %s events again and again",
			sz.LatenessRuns, latenessLoadAppenders, count(sz.ReplayEvents)),
		Ordo:   fmt.Sprintf("p50 %s, p99 %s, max %s", millis(p50), millis(p99), millis(worst)),
		Target: "p99 ≤ 1 s",
		Checks: []Check{atMost("p99 ms", p99, 1000)},
		Metrics: positive(map[string]float64{
			"p50_ms": p50, "p99_ms": p99, "max_ms": worst, "runs": float64(len(l)),
			"load_appends_per_s": float64(bg.appended.Load()) / took, "load_events_loaded": float64(bg.loaded.Load()),
			"load_events_replayed": float64(bg.replayed.Load()),
		}),
		Note: fmt.Sprintf("the load appended %s events/s and loaded %s and replayed %s events meanwhile",
			count(float64(bg.appended.Load())/took), count(bg.loaded.Load()), count(bg.replayed.Load())),
	}}, nil
}
