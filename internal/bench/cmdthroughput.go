package bench

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

// CommandConcurrency is the worker slots of both sides of the command
// throughput scenario: a command task holds its slot while its process
// runs, so this is how many processes run at once.
const CommandConcurrency = 50

// commandSizes are the command throughput scenario's sizes, a fifth of the
// no-op scenario's: the tasks of the one big run, and the runs of RunTasks
// tasks.
func commandSizes(sz Sizes) (oneRun, runs int) {
	return max(sz.OneRunTasks/5, 1), max(sz.Runs/5, 1)
}

type trueArgs struct{}

func (trueArgs) Kind() string { return "bench.true" }

// trueWorker is the baseline's work: run `true` with os/exec.
type trueWorker struct {
	river.WorkerDefaults[trueArgs]
}

func (w *trueWorker) Work(ctx context.Context, _ *river.Job[trueArgs]) error {
	return exec.CommandContext(ctx, "true").Run()
}

// riverTruePerSecond inserts n jobs that each run `true` into a new
// database, then starts a River client with CommandConcurrency workers and
// the fetch settings of Ordo's workers, and measures until River has
// completed them all.
func riverTruePerSecond(ctx context.Context, env Env, n int) (rate, cpu, pgCPU float64, err error) {
	pool, err := newPool(ctx, env)
	if err != nil {
		return 0, 0, 0, err
	}
	defer pool.Close()
	workers := river.NewWorkers()
	river.AddWorker(workers, &trueWorker{})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:            map[string]river.QueueConfig{domain.DefaultWorkQueue: {MaxWorkers: CommandConcurrency}},
		Workers:           workers,
		FetchCooldown:     FetchCooldown,
		FetchPollInterval: FetchPollInterval,
		JobTimeout:        -1,
		Logger:            quiet,
	})
	if err != nil {
		return 0, 0, 0, err
	}
	params := make([]river.InsertManyParams, n)
	for i := range params {
		params[i] = river.InsertManyParams{Args: trueArgs{}}
	}
	if _, err := client.InsertManyFast(ctx, params); err != nil {
		return 0, 0, 0, err
	}
	events, cancel := client.SubscribeConfig(&river.SubscribeConfig{ChanSize: n, Kinds: []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed}})
	defer cancel()
	server := newServerCPU(ctx, pool)
	pgBefore := server.used() // a walk of /proc: before the clock starts
	began, cpuBefore := time.Now(), cpuTime()
	if err := client.Start(ctx); err != nil {
		return 0, 0, 0, err
	}
	for seen := 0; seen < n; seen++ {
		select {
		case e := <-events:
			if e.Kind != river.EventKindJobCompleted {
				return 0, 0, 0, fmt.Errorf("a `true` job failed: %v", e.Job.Errors)
			}
		case <-ctx.Done():
			return 0, 0, 0, ctx.Err()
		}
	}
	took, used, pgUsed := time.Since(began), cpuTime()-cpuBefore, server.used()-pgBefore
	if err := client.Stop(context.WithoutCancel(ctx)); err != nil {
		return 0, 0, 0, err
	}
	return float64(n) / took.Seconds(), perTask(used, n), perTask(pgUsed, n), nil
}

// trueFlow is a flow of n independent command tasks that each run `true`.
func trueFlow(n int) domain.FlowSpec {
	f := domain.FlowSpec{Name: "true", Tasks: make([]domain.TaskSpec, n)}
	for i := range n {
		f.Tasks[i] = domain.TaskSpec{Name: fmt.Sprintf("t%05d", i), Command: []string{"true"}}
	}
	return f
}

// ordoTruePerSecond creates runs of tasks that each run `true` on a new
// database (not worked yet), then starts a worker of CommandConcurrency
// slots and measures until every task has completed.
func ordoTruePerSecond(ctx context.Context, env Env, runs, tasks int) (rate, cpu, pgCPU float64, err error) {
	o, err := openOrdo(ctx, env)
	if err != nil {
		return 0, 0, 0, err
	}
	defer o.Close()
	ids, err := o.createRuns(ctx, runs, trueFlow(tasks))
	if err != nil {
		return 0, 0, 0, err
	}
	w, err := jobs.NewWorker(o.pool, o.store, jobs.WorkerOptions{
		Queues: []string{domain.DefaultWorkQueue}, Concurrency: CommandConcurrency,
		FetchCooldown: FetchCooldown, FetchPollInterval: FetchPollInterval,
		WorkspaceDir: filepath.Join(env.TempDir, "workspaces"), Logger: quiet,
	})
	if err != nil {
		return 0, 0, 0, err
	}
	server := newServerCPU(ctx, o.pool)
	pgBefore := server.used() // a walk of /proc: before the clock starts
	began, cpuBefore := time.Now(), cpuTime()
	if err := w.Start(ctx); err != nil {
		return 0, 0, 0, err
	}
	err = o.waitRuns(ctx, ids)
	took, used, pgUsed := time.Since(began), cpuTime()-cpuBefore, server.used()-pgBefore
	if stopErr := w.Stop(context.WithoutCancel(ctx)); err == nil {
		err = stopErr
	}
	if err != nil {
		return 0, 0, 0, err
	}
	var completed int
	if err := o.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE type = 'TaskRunCompleted'`).Scan(&completed); err != nil {
		return 0, 0, 0, err
	}
	if completed != runs*tasks {
		return 0, 0, 0, fmt.Errorf("%d task runs completed, want %d", completed, runs*tasks)
	}
	return float64(runs*tasks) / took.Seconds(), perTask(used, runs*tasks), perTask(pgUsed, runs*tasks), nil
}

// perTask is d over n tasks, in milliseconds.
func perTask(d time.Duration, n int) float64 {
	return float64(d) / float64(time.Millisecond) / float64(n)
}

// CommandPair is one round of a command throughput measure: Ordo's tasks/s
// and raw River's jobs/s, measured one right after the other.
type CommandPair struct {
	Ordo, River float64
	// OrdoCPU and RiverCPU are the CPU milliseconds per task of this
	// process (the worker or the River client) and its children; OrdoPG
	// and RiverPG those of the PostgreSQL server, when its processes are
	// visible here (else 0).
	OrdoCPU, RiverCPU, OrdoPG, RiverPG float64
}

// Ratio is Ordo's rate over the baseline's.
func (p CommandPair) Ratio() float64 { return p.Ordo / p.River }

// MeasureCommandThroughput runs rounds of Ordo running runs×tasks
// independent `true` command tasks next to raw River running as many jobs
// that each run `true` with os/exec, with the same slots and fetch
// settings, each on a new database. The two sides alternate which goes
// first, so that neither always gets the quieter half of a round.
func MeasureCommandThroughput(ctx context.Context, env Env, rounds, runs, tasks int) ([]CommandPair, error) {
	var pairs []CommandPair
	n := runs * tasks
	for round := 1; round <= rounds; round++ {
		of := fmt.Sprintf("round %d of %d", round, rounds)
		var p CommandPair
		river := func() (err error) {
			env.logf("raw River, %s jobs that run `true` (%s)", count(n), of)
			p.River, p.RiverCPU, p.RiverPG, err = riverTruePerSecond(ctx, env, n)
			if err != nil {
				err = fmt.Errorf("raw River: %w", err)
			}
			return err
		}
		ordo := func() (err error) {
			env.logf("Ordo, %s of %s `true` tasks (%s)", runsOf(runs), count(tasks), of)
			p.Ordo, p.OrdoCPU, p.OrdoPG, err = ordoTruePerSecond(ctx, env, runs, tasks)
			return err
		}
		steps := []func() error{river, ordo}
		if round%2 == 0 {
			slices.Reverse(steps)
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return pairs, err
			}
		}
		env.logf("Ordo %s tasks/s, River %s jobs/s: %.2f; CPU per task: Ordo %.2f ms, River %.2f ms; PostgreSQL's: %.2f ms, %.2f ms", count(p.Ordo), count(p.River), p.Ratio(), p.OrdoCPU, p.RiverCPU, p.OrdoPG, p.RiverPG)
		pairs = append(pairs, p)
	}
	return pairs, nil
}

func runsOf(runs int) string {
	if runs == 1 {
		return "1 run"
	}
	return count(runs) + " runs"
}

func commandThroughputScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	sz := opts.Sizes
	oneRun, runs := commandSizes(sz)
	var rows []Row
	for _, shape := range []struct{ runs, tasks int }{{1, oneRun}, {runs, sz.RunTasks}} {
		pairs, err := MeasureCommandThroughput(ctx, env, sz.ThroughputRounds, shape.runs, shape.tasks)
		if err != nil {
			return rows, err
		}
		var ordo, river, ratios, ordoCPU, riverCPU, ordoPG, riverPG []float64
		for _, p := range pairs {
			ordo, river, ratios = append(ordo, p.Ordo), append(river, p.River), append(ratios, p.Ratio())
			ordoCPU, riverCPU = append(ordoCPU, p.OrdoCPU), append(riverCPU, p.RiverCPU)
			ordoPG, riverPG = append(ordoPG, p.OrdoPG), append(riverPG, p.RiverPG)
		}
		r := median(ratios)
		lo, hi := slices.Min(ratios), slices.Max(ratios)
		note := fmt.Sprintf("ratio: median of %d per-round ratios (%.2f–%.2f), the two sides alternating which goes first; CPU per task of the worker process and its children (not PostgreSQL's): Ordo %.2f ms, River %.2f ms",
			len(ratios), lo, hi, median(ordoCPU), median(riverCPU))
		if median(ordoPG) > 0 {
			note += fmt.Sprintf("; PostgreSQL's CPU per task: Ordo %.2f ms, River %.2f ms", median(ordoPG), median(riverPG))
		}
		rows = append(rows, Row{
			What: fmt.Sprintf("`true` command tasks, %s of %s tasks, %d slots", runsOf(shape.runs), count(shape.tasks), CommandConcurrency),
			Ordo: count(median(ordo)) + " tasks/s",
			Baseline: fmt.Sprintf("raw River jobs running `true` with os/exec, same settings: %s jobs/s",
				count(median(river))),
			Ratio:  ratio(r),
			Target: "≥ 0.80 of raw River + os/exec",
			Checks: []Check{atLeast("ratio", r, 0.8)},
			Metrics: map[string]float64{
				"tasks_per_s": median(ordo), "river_jobs_per_s": median(river), "ratio": r,
				"ordo_cpu_ms_per_task": median(ordoCPU), "river_cpu_ms_per_task": median(riverCPU),
				"ordo_pg_cpu_ms_per_task": median(ordoPG), "river_pg_cpu_ms_per_task": median(riverPG),
			},
			Note: note,
		})
	}
	return rows, nil
}
