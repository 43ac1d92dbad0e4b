package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/jobs"
)

// Worker settings shared by Ordo's workers and the raw River baseline. A
// no-op task holds its worker slot while its start and its outcome commit,
// so with few slots Ordo measures commit latency rather than its capacity;
// 1,000 slots keep both engines busy. The fetch settings are the worker's
// defaults (River's own default cooldown is 100 ms).
const (
	Concurrency       = 1000
	FetchCooldown     = 2 * time.Millisecond
	FetchPollInterval = 200 * time.Millisecond
)

// poolConns is the pool size of the measures that run in this process
// (the memory scenario's processes open pgxpool's default, as `ordo server`
// and `ordo worker` do).
const poolConns = 30

// NoopHandler is the Go handler task of the no-op scenarios.
const NoopHandler = "noop"

// NoopHandlers are the handlers of a worker that runs no-op tasks.
func NoopHandlers() *jobs.Handlers {
	h := &jobs.Handlers{}
	h.Handle(NoopHandler, func(context.Context, jobs.TaskContext) (any, error) { return nil, nil })
	return h
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// ordoDB is a fresh database with Ordo's write side on it.
type ordoDB struct {
	env   Env
	pool  *pgxpool.Pool
	store *eventstore.Store
	svc   *commands.Service
}

// openOrdo connects to a new database.
func openOrdo(ctx context.Context, env Env) (*ordoDB, error) {
	url, err := env.newDatabase(ctx)
	if err != nil {
		return nil, err
	}
	return connectOrdo(ctx, env, url)
}

func connectOrdo(ctx context.Context, env Env, url string) (*ordoDB, error) {
	pool, err := connect(ctx, url)
	if err != nil {
		return nil, err
	}
	store := eventstore.New(pool, domain.NewRegistry())
	client, err := jobs.NewInsertClient(pool)
	if err != nil {
		store.Close()
		pool.Close()
		return nil, err
	}
	return &ordoDB{env: env, pool: pool, store: store, svc: commands.NewService(pool, store, jobs.RiverEnqueuer(client), commands.ServiceOptions{})}, nil
}

func (o *ordoDB) Close() {
	o.store.Close()
	o.pool.Close()
}

// newPool opens a pool of poolConns connections on a new database.
func newPool(ctx context.Context, env Env) (*pgxpool.Pool, error) {
	url, err := env.newDatabase(ctx)
	if err != nil {
		return nil, err
	}
	return connect(ctx, url)
}

func connect(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = poolConns
	eventstore.ConfigurePool(cfg)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return pool, nil
}

// worker returns a worker on the default queue with the shared settings.
func (o *ordoDB) worker(handlers *jobs.Handlers) (*jobs.Worker, error) {
	return jobs.NewWorker(o.pool, o.store, jobs.WorkerOptions{
		Queues: []string{domain.DefaultWorkQueue}, Concurrency: Concurrency, Handlers: handlers,
		FetchCooldown: FetchCooldown, FetchPollInterval: FetchPollInterval,
		WorkspaceDir: filepath.Join(o.env.TempDir, "workspaces"), Logger: quiet,
	})
}

// noopFlow is a flow of n no-op handler tasks, independent or each after
// the one before.
func noopFlow(name string, n int, chain bool) domain.FlowSpec {
	f := domain.FlowSpec{Name: name, Tasks: make([]domain.TaskSpec, n)}
	for i := range n {
		f.Tasks[i] = domain.TaskSpec{Name: fmt.Sprintf("t%05d", i), Handler: NoopHandler}
		if chain && i > 0 {
			f.Tasks[i].DependsOn = []string{f.Tasks[i-1].Name}
		}
	}
	return f
}

// createRuns creates runs of the flow, a few at a time, and returns their
// ids.
func (o *ordoDB) createRuns(ctx context.Context, runs int, flow domain.FlowSpec) ([]uuid.UUID, error) {
	ids := make([]uuid.UUID, runs)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range ids {
		g.Go(func() error {
			run, err := o.svc.RunCreate(gctx, commands.RunCreateParams{Flow: flow, Actor: "bench"})
			ids[i] = run.ID
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("create runs: %w", err)
	}
	// The planner needs statistics of the tables just filled: plans cached
	// while they were empty would scan them (autovacuum analyzes them in
	// production).
	if _, err := o.pool.Exec(ctx, `ANALYZE`); err != nil {
		return nil, err
	}
	return ids, nil
}

// waitRuns returns once none of the runs has an unfinished task run. Raw
// River's side of the comparison waits on an in-process channel that costs
// the database nothing, so this wait is kept as cheap as it can be: every
// 10 ms it asks about the oldest runs not seen done, at most waitWindow of
// them (runs are worked about in the order they were created), and asks
// about the next ones at once while those it asked about are all done.
// Asking about all 1,000 runs of scenario 1 each time took 4% of the
// machine: PostgreSQL planned the 1,000-element array afresh each time.
func (o *ordoDB) waitRuns(ctx context.Context, ids []uuid.UUID) error {
	deadline := time.Now().Add(10 * time.Minute)
	remaining := make([][16]byte, len(ids)) // raw bytes: no text round trip
	for i, id := range ids {
		remaining[i] = id
	}
	done := map[[16]byte]bool{}
	for {
		window := remaining[:min(len(remaining), waitWindow)]
		rows, err := o.pool.Query(ctx,
			`SELECT flow_run_id FROM flow_run_progress WHERE flow_run_id = ANY($1) AND task_runs_unfinished = 0`, window)
		if err != nil {
			return err
		}
		var id [16]byte
		_, err = pgx.ForEachRow(rows, []any{&id}, func() error {
			done[id] = true
			return nil
		})
		if err != nil {
			return err
		}
		allDone := len(done) == len(window)
		remaining = slices.DeleteFunc(remaining, func(id [16]byte) bool { return done[id] })
		clear(done)
		switch {
		case len(remaining) == 0:
			return nil
		case allDone:
			continue // ask about the next ones now
		case time.Now().After(deadline):
			return fmt.Errorf("%d of %d runs done after 10 minutes", len(ids)-len(remaining), len(ids))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitWindow is how many runs waitRuns asks about at once.
const waitWindow = 32

// tasksPerSecond creates runs of no-op tasks (not worked yet), then starts
// a worker and measures until every task has completed.
func (o *ordoDB) tasksPerSecond(ctx context.Context, runs, tasks int) (float64, error) {
	ids, err := o.createRuns(ctx, runs, noopFlow("bench", tasks, false))
	if err != nil {
		return 0, err
	}
	var before int64
	if err := o.pool.QueryRow(ctx, `SELECT coalesce(max(position), 0) FROM events`).Scan(&before); err != nil {
		return 0, err
	}
	w, err := o.worker(NoopHandlers())
	if err != nil {
		return 0, err
	}
	began := time.Now()
	if err := w.Start(ctx); err != nil {
		return 0, err
	}
	err = o.waitRuns(ctx, ids)
	took := time.Since(began)
	if stopErr := w.Stop(context.WithoutCancel(ctx)); err == nil {
		err = stopErr
	}
	if err != nil {
		return 0, err
	}
	var completed int
	if err := o.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE position > $1 AND type = 'TaskRunCompleted'`, before).Scan(&completed); err != nil {
		return 0, err
	}
	if completed != runs*tasks {
		return 0, fmt.Errorf("%d task runs completed, want %d", completed, runs*tasks)
	}
	return float64(runs*tasks) / took.Seconds(), nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// percentile is the nearest-rank percentile p (0 to 1) of sorted.
func percentile(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
