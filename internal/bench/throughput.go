package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

type noopArgs struct{}

func (noopArgs) Kind() string { return "bench.noop" }

type noopWorker struct {
	river.WorkerDefaults[noopArgs]
}

func (w *noopWorker) Work(context.Context, *river.Job[noopArgs]) error { return nil }

// riverJobsPerSecond inserts n no-op jobs into a new database, then starts
// a River client with the workers' settings and measures until River has
// completed them all.
func riverJobsPerSecond(ctx context.Context, env Env, n int) (float64, error) {
	pool, err := newPool(ctx, env)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	workers := river.NewWorkers()
	river.AddWorker(workers, &noopWorker{})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:            map[string]river.QueueConfig{domain.DefaultWorkQueue: {MaxWorkers: Concurrency}},
		Workers:           workers,
		FetchCooldown:     FetchCooldown,
		FetchPollInterval: FetchPollInterval,
		JobTimeout:        -1,
		Logger:            quiet,
	})
	if err != nil {
		return 0, err
	}
	params := make([]river.InsertManyParams, n)
	for i := range params {
		params[i] = river.InsertManyParams{Args: noopArgs{}}
	}
	if _, err := client.InsertManyFast(ctx, params); err != nil {
		return 0, err
	}
	// Done means completed in the database: River reports it once its
	// batch completer has stored the completion.
	completed, cancel := client.SubscribeConfig(&river.SubscribeConfig{ChanSize: n, Kinds: []river.EventKind{river.EventKindJobCompleted}})
	defer cancel()
	began := time.Now()
	if err := client.Start(ctx); err != nil {
		return 0, err
	}
	for seen := 0; seen < n; seen++ {
		select {
		case <-completed:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	took := time.Since(began)
	if err := client.Stop(context.WithoutCancel(ctx)); err != nil {
		return 0, err
	}
	return float64(n) / took.Seconds(), nil
}

// Throughput is scenario 1: no-op Go handler tasks per second in one run of
// many tasks and in many runs of a few tasks, next to raw River working
// no-op jobs with the same worker settings (concurrency, fetch cooldown and
// poll interval) on the same server. Each round measures the three in turn,
// each on a new database; the figures are the medians over the rounds, so
// that a burst of other load on the machine during one of them does not
// decide the ratio.
type Throughput struct {
	River, OneRun, ManyRuns []float64 // per round: jobs/s and tasks/s
}

// MeasureThroughput runs the rounds of scenario 1. Each round measures raw
// River and both Ordo workloads back to back, first River in odd rounds and
// last in even ones, so that a baseline is always measured next to what it
// is compared with, and a drift of the machine's speed during a round
// favours neither side.
func MeasureThroughput(ctx context.Context, env Env, sz Sizes) (Throughput, error) {
	var t Throughput
	for round := 1; round <= sz.ThroughputRounds; round++ {
		of := fmt.Sprintf("round %d of %d", round, sz.ThroughputRounds)
		var r, one, many float64
		river := func() (err error) {
			env.logf("raw River, %s no-op jobs (%s)", count(sz.RiverJobs), of)
			if r, err = riverJobsPerSecond(ctx, env, sz.RiverJobs); err != nil {
				return fmt.Errorf("raw River: %w", err)
			}
			return nil
		}
		ordo := func() (err error) {
			env.logf("Ordo, 1 run of %s no-op tasks (%s)", count(sz.OneRunTasks), of)
			if one, err = ordoTasksPerSecond(ctx, env, 1, sz.OneRunTasks); err != nil {
				return err
			}
			env.logf("Ordo, %s runs of %d no-op tasks (%s)", count(sz.Runs), sz.RunTasks, of)
			many, err = ordoTasksPerSecond(ctx, env, sz.Runs, sz.RunTasks)
			return err
		}
		steps := []func() error{river, ordo}
		if round%2 == 0 {
			steps = []func() error{ordo, river}
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return t, err
			}
		}
		env.logf("River %s jobs/s, Ordo %s and %s tasks/s", count(r), count(one), count(many))
		t.River, t.OneRun, t.ManyRuns = append(t.River, r), append(t.OneRun, one), append(t.ManyRuns, many)
	}
	return t, nil
}

// ordoTasksPerSecond measures runs of no-op tasks on a new database.
func ordoTasksPerSecond(ctx context.Context, env Env, runs, tasks int) (float64, error) {
	o, err := openOrdo(ctx, env)
	if err != nil {
		return 0, err
	}
	defer o.Close()
	return o.tasksPerSecond(ctx, runs, tasks)
}

func throughputScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	sz := opts.Sizes
	t, err := MeasureThroughput(ctx, env, sz)
	if err != nil {
		return nil, err
	}
	r := median(t.River)
	row := func(what string, rounds []float64) Row {
		o := median(rounds)
		q := perRound(rounds, t.River)
		return Row{
			What:     what,
			Ordo:     count(o) + " tasks/s",
			Baseline: "raw River no-op jobs, same settings, same rounds: " + count(r) + " jobs/s",
			Ratio:    ratio(q.median),
			Target:   "≥ 0.50 of raw River",
			Checks:   []Check{atLeast("ratio", q.median, 0.5)},
			Metrics: map[string]float64{"tasks_per_s": o, "river_jobs_per_s": r, "ratio": q.median,
				"ratio_min": q.min, "ratio_max": q.max, "rounds": float64(len(rounds))},
			Note: q.note(rounds, t.River, "tasks/s", "jobs/s"),
		}
	}
	return []Row{
		row(fmt.Sprintf("no-op tasks, 1 run of %s tasks", count(sz.OneRunTasks)), t.OneRun),
		row(fmt.Sprintf("no-op tasks, %s runs of %d tasks", count(sz.Runs), sz.RunTasks), t.ManyRuns),
	}, nil
}

// roundsNote names the rounds a median was taken from.
func roundsNote(rounds []float64, unit string) string {
	if len(rounds) < 2 {
		return ""
	}
	s := slices.Clone(rounds)
	slices.Sort(s)
	return fmt.Sprintf("median of %d rounds (%s–%s %s)", len(s), count(s[0]), count(s[len(s)-1]), unit)
}

// ratios are the per-round ratios of a measure to its baseline, measured
// in the same rounds: their median is the figure judged, and their spread
// shows how much one round can be trusted.
type ratios struct{ median, min, max float64 }

func perRound(xs, baselines []float64) ratios {
	rs := make([]float64, len(xs))
	for i := range xs {
		rs[i] = xs[i] / baselines[i]
	}
	slices.Sort(rs)
	return ratios{median: median(rs), min: rs[0], max: rs[len(rs)-1]}
}

func (q ratios) note(xs, baselines []float64, unit, baseUnit string) string {
	if len(xs) < 2 {
		return ""
	}
	return fmt.Sprintf("median of %d per-round ratios (%.2f–%.2f); Ordo %s, baseline %s",
		len(xs), q.min, q.max, spread(xs, unit), spread(baselines, baseUnit))
}

// spread is "min–max unit" of xs.
func spread(xs []float64, unit string) string {
	return fmt.Sprintf("%s–%s %s", count(slices.Min(xs)), count(slices.Max(xs)), unit)
}

// StepLatencies runs chains of no-op Go handler tasks, one per round, each
// on a new database, and returns every step in milliseconds, sorted: from
// the moment a task's handler returns to the moment the next task's
// handler is called. A step includes recording the outcome, counting down
// the fan-in, queueing the next job and waking the queue, River fetching
// it, and recording its start.
func StepLatencies(ctx context.Context, env Env, tasks, rounds int) ([]float64, error) {
	var steps []float64
	for round := 1; round <= rounds; round++ {
		env.logf("a chain of %s no-op tasks (round %d of %d)", count(tasks), round, rounds)
		s, err := chainSteps(ctx, env, tasks)
		if err != nil {
			return nil, err
		}
		steps = append(steps, s...)
	}
	slices.Sort(steps)
	return steps, nil
}

func chainSteps(ctx context.Context, env Env, n int) ([]float64, error) {
	o, err := openOrdo(ctx, env)
	if err != nil {
		return nil, err
	}
	defer o.Close()
	var (
		mu    sync.Mutex
		began = map[string]time.Time{}
		ended = map[string]time.Time{}
	)
	handlers := &jobs.Handlers{}
	handlers.Handle(NoopHandler, func(_ context.Context, tc jobs.TaskContext) (any, error) {
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
	flow := noopFlow("chain", n, true)
	ids, err := o.createRuns(ctx, 1, flow)
	if err != nil {
		return nil, err
	}
	w, err := o.worker(handlers)
	if err != nil {
		return nil, err
	}
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	err = o.waitRuns(ctx, ids)
	if stopErr := w.Stop(context.WithoutCancel(ctx)); err == nil {
		err = stopErr
	}
	if err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	steps := make([]float64, 0, n-1)
	for i := 1; i < n; i++ {
		steps = append(steps, float64(began[flow.Tasks[i].Name].Sub(ended[flow.Tasks[i-1].Name]))/float64(time.Millisecond))
	}
	return steps, nil
}

func stepLatencyScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	sz := opts.Sizes
	steps, err := StepLatencies(ctx, env, sz.ChainTasks, sz.Rounds)
	if err != nil {
		return nil, err
	}
	p50, p99, worst := percentile(steps, 0.50), percentile(steps, 0.99), steps[len(steps)-1]
	return []Row{{
		What:    fmt.Sprintf("step latency, %s-task chain of no-op handlers (task done → next task running)", count(sz.ChainTasks)),
		Ordo:    fmt.Sprintf("p50 %s, p99 %s, max %s", millis(p50), millis(p99), millis(worst)),
		Target:  "p50 ≤ 5 ms, p99 ≤ 25 ms",
		Checks:  []Check{atMost("p50 ms", p50, 5), atMost("p99 ms", p99, 25)},
		Metrics: map[string]float64{"p50_ms": p50, "p99_ms": p99, "max_ms": worst, "steps": float64(len(steps))},
		Note:    fmt.Sprintf("%s steps over %d chains", count(float64(len(steps))), sz.Rounds),
	}}, nil
}
