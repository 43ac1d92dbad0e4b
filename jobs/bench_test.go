package jobs_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/jobs"
)

// Worker settings shared by Ordo's workers and the raw River baseline. A
// no-op task holds its worker slot while its start and its outcome commit,
// so with few slots Ordo measures commit latency rather than its capacity;
// 1,000 slots keep both engines busy. The fetch settings are the worker's
// defaults (River's own default cooldown is 100 ms).
const (
	benchConcurrency = 1000
	benchCooldown    = 2 * time.Millisecond
	benchPoll        = 200 * time.Millisecond
)

var benchLogger = slog.New(slog.NewTextHandler(discard{}, nil))

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// benchBundle is a fresh database with a service and a worker factory.
type benchBundle struct {
	pool     *pgxpool.Pool
	store    *eventstore.Store
	svc      *jobs.Service
	handlers *jobs.Handlers
}

func benchSetup(b *testing.B) benchBundle {
	b.Helper()
	pool, err := pgxpool.New(context.Background(), pgtest.URL(b)+"&pool_max_conns=30")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	store := eventstore.New(pool, domain.NewRegistry())
	b.Cleanup(store.Close)
	client, err := jobs.NewInsertClient(pool)
	if err != nil {
		b.Fatal(err)
	}
	handlers := &jobs.Handlers{}
	handlers.Handle("noop", func(context.Context, jobs.TaskContext) (any, error) { return nil, nil })
	return benchBundle{pool: pool, store: store, svc: jobs.NewService(pool, store, client, jobs.ServiceOptions{}), handlers: handlers}
}

func (bb benchBundle) worker(b *testing.B, handlers *jobs.Handlers) *jobs.Worker {
	b.Helper()
	w, err := jobs.NewWorker(bb.pool, bb.store, jobs.WorkerOptions{
		Queues: []string{domain.DefaultWorkQueue}, Concurrency: benchConcurrency, Handlers: handlers,
		FetchCooldown: benchCooldown, FetchPollInterval: benchPoll, WorkspaceDir: b.TempDir(), Logger: benchLogger,
	})
	if err != nil {
		b.Fatal(err)
	}
	return w
}

func noopFlow(name string, n int, chain bool) domain.FlowSpec {
	f := domain.FlowSpec{Name: name, Tasks: make([]domain.TaskSpec, n)}
	for i := range n {
		f.Tasks[i] = domain.TaskSpec{Name: fmt.Sprintf("t%05d", i), Handler: "noop"}
		if chain && i > 0 {
			f.Tasks[i].DependsOn = []string{f.Tasks[i-1].Name}
		}
	}
	return f
}

// analyze gives the planner statistics of the tables just filled: a fresh
// database has none, and plans cached while the event log was empty scan
// it (production tables are analyzed by autovacuum).
func (bb benchBundle) analyze(b *testing.B) {
	b.Helper()
	if _, err := bb.pool.Exec(context.Background(), `ANALYZE`); err != nil {
		b.Fatal(err)
	}
}

// runsDone waits until every created run has no unfinished task run.
func (bb benchBundle) runsDone(b *testing.B, runs int) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var done int
		if err := bb.pool.QueryRow(context.Background(),
			`SELECT count(*) FROM flow_run_progress WHERE task_runs_unfinished = 0`).Scan(&done); err != nil {
			b.Fatal(err)
		}
		if done == runs {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d runs done after 10 minutes", done, runs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ordoTasksPerSecond creates runs (not worked yet), then starts a worker and
// measures until every run has finished.
func ordoTasksPerSecond(b *testing.B, runs, tasks int) float64 {
	bb := benchSetup(b)
	ctx := context.Background()
	for i := range runs {
		if _, err := bb.svc.RunCreate(ctx, jobs.RunCreateParams{Flow: noopFlow(fmt.Sprint("bench", i), tasks, false), Actor: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
	bb.analyze(b)
	w := bb.worker(b, bb.handlers)
	began := time.Now()
	if err := w.Start(ctx); err != nil {
		b.Fatal(err)
	}
	bb.runsDone(b, runs)
	took := time.Since(began)
	if err := w.Stop(ctx); err != nil {
		b.Fatal(err)
	}
	var completed int
	bb.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE type = 'TaskRunCompleted'`).Scan(&completed)
	if completed != runs*tasks {
		b.Fatalf("%d task runs completed, want %d", completed, runs*tasks)
	}
	return float64(runs*tasks) / took.Seconds()
}

type benchNoopArgs struct{}

func (benchNoopArgs) Kind() string { return "bench.noop" }

type benchNoopWorker struct {
	river.WorkerDefaults[benchNoopArgs]
}

func (w *benchNoopWorker) Work(context.Context, *river.Job[benchNoopArgs]) error { return nil }

// riverJobsPerSecond inserts n no-op jobs, then starts a River client with
// the workers' settings and measures until River has completed them all.
func riverJobsPerSecond(b *testing.B, n int) float64 {
	bb := benchSetup(b)
	ctx := context.Background()
	workers := river.NewWorkers()
	river.AddWorker(workers, &benchNoopWorker{})
	client, err := river.NewClient(riverpgxv5.New(bb.pool), &river.Config{
		Queues:            map[string]river.QueueConfig{domain.DefaultWorkQueue: {MaxWorkers: benchConcurrency}},
		Workers:           workers,
		FetchCooldown:     benchCooldown,
		FetchPollInterval: benchPoll,
		JobTimeout:        -1,
		Logger:            benchLogger,
	})
	if err != nil {
		b.Fatal(err)
	}
	params := make([]river.InsertManyParams, n)
	for i := range params {
		params[i] = river.InsertManyParams{Args: benchNoopArgs{}}
	}
	if _, err := client.InsertManyFast(ctx, params); err != nil {
		b.Fatal(err)
	}
	// Done means completed in the database: River reports it once its
	// batch completer has stored the completion.
	completed, cancel := client.SubscribeConfig(&river.SubscribeConfig{ChanSize: n, Kinds: []river.EventKind{river.EventKindJobCompleted}})
	defer cancel()
	began := time.Now()
	if err := client.Start(ctx); err != nil {
		b.Fatal(err)
	}
	for seen := 0; seen < n; seen++ {
		<-completed
	}
	took := time.Since(began)
	if err := client.Stop(ctx); err != nil {
		b.Fatal(err)
	}
	return float64(n) / took.Seconds()
}

// BenchmarkThroughput measures no-op Go handler tasks per second, in one
// run of 10,000 independent tasks and in 1,000 runs of 10 tasks, next to raw
// River working 10,000 no-op jobs with the same worker settings (concurrency,
// fetch cooldown and poll interval) on the same server in the same run. Each
// iteration measures the three in turn; the figures are the medians over
// the iterations, so that a burst of other load on the machine during one
// of them does not decide the ratio.
//
//	go test ./jobs -run '^$' -bench BenchmarkThroughput -benchtime 3x
func BenchmarkThroughput(b *testing.B) {
	var river, one, many []float64
	for range b.N {
		river = append(river, riverJobsPerSecond(b, 10_000))
		one = append(one, ordoTasksPerSecond(b, 1, 10_000))
		many = append(many, ordoTasksPerSecond(b, 1_000, 10))
	}
	r, o, m := median(river), median(one), median(many)
	b.ReportMetric(r, "river_jobs/s")
	b.ReportMetric(o, "tasks/s_1x10000")
	b.ReportMetric(m, "tasks/s_1000x10")
	b.ReportMetric(o/r, "ratio_1x10000")
	b.ReportMetric(m/r, "ratio_1000x10")
	b.Logf("river jobs/s %.0f, tasks/s 1x10000 %.0f, 1000x10 %.0f", river, one, many)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkStepLatency runs a chain of 1,000 no-op Go handler tasks and
// measures each step: from the moment a task's handler returns to the
// moment the next task's handler is called, which includes recording the
// outcome, counting down the fan-in, queueing the next job and waking the
// queue, River fetching it, and recording its start. The percentiles are
// over the steps of every iteration.
//
//	go test ./jobs -run '^$' -bench BenchmarkStepLatency -benchtime 3x
func BenchmarkStepLatency(b *testing.B) {
	const n = 1000
	var steps []time.Duration
	for range b.N {
		bb := benchSetup(b)
		var (
			mu    sync.Mutex
			began = map[string]time.Time{}
			ended = map[string]time.Time{}
		)
		handlers := &jobs.Handlers{}
		handlers.Handle("noop", func(_ context.Context, tc jobs.TaskContext) (any, error) {
			now := time.Now()
			mu.Lock()
			began[tc.TaskName] = now
			mu.Unlock()
			defer func() {
				mu.Lock()
				ended[tc.TaskName] = time.Now()
				mu.Unlock()
			}()
			return nil, nil
		})
		ctx := context.Background()
		flow := noopFlow("chain", n, true)
		if _, err := bb.svc.RunCreate(ctx, jobs.RunCreateParams{Flow: flow, Actor: "bench"}); err != nil {
			b.Fatal(err)
		}
		bb.analyze(b)
		w := bb.worker(b, handlers)
		if err := w.Start(ctx); err != nil {
			b.Fatal(err)
		}
		bb.runsDone(b, 1)
		if err := w.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		for i := 1; i < n; i++ {
			steps = append(steps, began[flow.Tasks[i].Name].Sub(ended[flow.Tasks[i-1].Name]))
		}
	}
	slices.Sort(steps)
	pct := func(p float64) float64 {
		return float64(steps[int(p*float64(len(steps)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50_ms")
	b.ReportMetric(pct(0.99), "p99_ms")
	b.ReportMetric(pct(1), "max_ms")
}
