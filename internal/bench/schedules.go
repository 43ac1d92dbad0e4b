package bench

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/jobs"
)

// Settings of the schedules-at-scale scenario: deployments on a 1-minute
// cron, each one `true` command task, and two workers.
const (
	scaleWorkers      = 2
	scaleConcurrency  = 50
	scaleMinutes      = 2 // whole minutes of runs measured
	scaleSaveClients  = 8 // concurrent deployment saves
	scaleAheadTimeout = 30 * time.Minute
)

// SchedulesAtScale is what the schedules-at-scale scenario measured.
type SchedulesAtScale struct {
	Deployments int
	Saved       time.Duration // to save every deployment
	// Lateness of the runs due in the first scaleMinutes whole minutes after
	// the deployments were saved, in ms, sorted; Missing are those of the
	// n*scaleMinutes runs due then that had not started five minutes after.
	Lateness []float64
	Missing  int
	// RunsAhead is how many runs the scheduler created ahead in all, AheadTook
	// how long after the saves began it had, and AheadBytes how much the
	// database grew meanwhile.
	RunsAhead  int64
	AheadTook  time.Duration
	AheadBytes int64
	// Baseline is how long raw River, with the same two clients, takes to run
	// one `true` per deployment with os/exec, from insert to the last done.
	Baseline time.Duration
}

// MeasureSchedulesAtScale saves n deployments on a 1-minute cron with a
// scheduler, a due timer and two workers running, as a server and two
// workers would, and measures the lateness of their runs in the first whole
// minutes after, the cost of the runs created ahead, and the raw River
// baseline of one minute's tasks.
//
// The schedule is a cron of every minute when period is a minute, else an
// interval schedule of period (--quick).
func MeasureSchedulesAtScale(ctx context.Context, env Env, n int, period time.Duration) (SchedulesAtScale, error) {
	out := SchedulesAtScale{Deployments: n}
	var err error
	env.logf("raw River + os/exec: %s `true` commands, %d clients of concurrency %d", count(n), scaleWorkers, scaleConcurrency)
	if out.Baseline, err = riverExecTime(ctx, env, n); err != nil {
		return out, fmt.Errorf("raw River baseline: %w", err)
	}
	env.logf("raw River + os/exec ran them in %s", seconds(out.Baseline))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pool, err := newPool(ctx, env)
	if err != nil {
		return out, err
	}
	defer pool.Close()
	store := eventstore.New(pool, domain.NewRegistry())
	defer store.Close()
	client, err := jobs.NewInsertClient(pool)
	if err != nil {
		return out, err
	}
	due := jobs.NewDueTimer(pool, jobs.DueTimerOptions{Logger: quiet})
	go func() { _ = due.Run(ctx) }()
	svc := commands.NewService(pool, store, jobs.RiverEnqueuer(client), commands.ServiceOptions{DueTimer: due})
	for i := range scaleWorkers {
		w, err := jobs.NewWorker(pool, store, jobs.WorkerOptions{
			Name: fmt.Sprintf("worker-%d", i+1), Queues: []string{domain.DefaultWorkQueue}, Concurrency: scaleConcurrency,
			Logger: quiet, WorkspaceDir: filepath.Join(env.TempDir, "workspaces"),
		})
		if err != nil {
			return out, err
		}
		if err := w.Start(ctx); err != nil {
			return out, err
		}
		defer w.Stop(context.WithoutCancel(ctx)) //nolint:errcheck // the measures are taken
	}
	s, err := jobs.NewScheduler(pool, svc, jobs.SchedulerOptions{Logger: quiet})
	if err != nil {
		return out, err
	}
	go func() { _ = s.Run(ctx) }()

	var size0 int64
	if err := pool.QueryRow(ctx, `SELECT pg_database_size(current_database())`).Scan(&size0); err != nil {
		return out, err
	}
	// Start right after a minute begins, so that saving takes its share of
	// the minute before the first runs are due the same way in every run.
	wait := time.Until(time.Now().Truncate(period).Add(period + period/60))
	env.logf("saving %s deployments on a schedule of every %s from %s", count(n), period, time.Now().Add(wait).Format(time.TimeOnly))
	select {
	case <-ctx.Done():
		return out, ctx.Err()
	case <-time.After(wait):
	}
	began := time.Now()
	if err := saveCronDeployments(ctx, store, n, period); err != nil {
		return out, err
	}
	out.Saved = time.Since(began)
	first := time.Now().Truncate(period).Add(period)
	until := first.Add(scaleMinutes * period)
	env.logf("saved in %s; measuring the runs due from %s to %s", seconds(out.Saved), first.Format(time.TimeOnly), until.Add(-period).Format(time.TimeOnly))

	want := n * scaleMinutes
	deadline := until.Add(5 * time.Minute)
	poll := min(2*time.Second, period/2)
	for {
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(poll):
		}
		// A run's first task start and its FlowRunStarted are one
		// transaction, so the latter's time is the start; read by the
		// stream index, so that polling costs the measured server little.
		rows, err := pool.Query(ctx, `
SELECT extract(epoch FROM s.recorded_at - r.scheduled_at)::float8 * 1000
FROM scheduled_runs r
JOIN events s ON s.stream_id = r.flow_run_id AND s.type = 'FlowRunStarted'
WHERE r.scheduled_at >= $1 AND r.scheduled_at < $2`, first, until)
		if err != nil {
			return out, err
		}
		if out.Lateness, err = pgx.CollectRows(rows, pgx.RowTo[float64]); err != nil {
			return out, err
		}
		if len(out.Lateness) >= want {
			break
		}
		if time.Now().After(deadline) {
			out.Missing = want - len(out.Lateness)
			env.logf("only %d of the %d runs due from %s to %s started by %s", len(out.Lateness), want,
				first.Format(time.TimeOnly), until.Format(time.TimeOnly), deadline.Format(time.TimeOnly))
			break
		}
	}
	slices.Sort(out.Lateness)

	// Every deployment has its runs an hour ahead, or the scheduler's
	// default 100 of them when that is less.
	reach := min(time.Hour, 100*period) - period
	env.logf("waiting for the runs %s ahead", reach+period)
	aheadDeadline := began.Add(scaleAheadTimeout)
	for {
		var ahead int64
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM scheduled_runs`).Scan(&ahead); err != nil {
			return out, err
		}
		var behind int
		if err := pool.QueryRow(ctx, `
SELECT count(*) FROM deployment_schedules WHERE scheduled_through < now() + $1::interval`, reach).Scan(&behind); err != nil {
			return out, err
		}
		if behind == 0 && ahead > 0 {
			out.AheadTook = time.Since(began)
			var size int64
			if err := pool.QueryRow(ctx, `SELECT pg_database_size(current_database())`).Scan(&size); err != nil {
				return out, err
			}
			out.AheadBytes = size - size0
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE type = 'FlowRunCreated'`).Scan(&out.RunsAhead); err != nil {
				return out, err
			}
			return out, nil
		}
		if time.Now().After(aheadDeadline) {
			return out, fmt.Errorf("%d deployments still had fewer than an hour of runs ahead after %s", behind, scaleAheadTimeout)
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// saveCronDeployments saves n deployments, each one `true` task every
// period, from a few clients at once.
func saveCronDeployments(ctx context.Context, store *eventstore.Store, n int, period time.Duration) error {
	cmds := commands.NewDeploymentCommands(store)
	sched := &domain.Schedule{Cron: "* * * * *"}
	if period != time.Minute {
		sched = &domain.Schedule{IntervalSeconds: period.Seconds()}
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan int)
	)
	for range scaleSaveClients {
		wg.Go(func() {
			for i := range next {
				_, _, err := cmds.DeploymentSave(ctx, domain.DeploymentSpec{
					Name: fmt.Sprintf("every-minute-%04d", i), Schedule: sched,
					Flow: domain.FlowSpec{Name: "true", Tasks: []domain.TaskSpec{{Name: "true", Command: []string{"true"}}}},
				}, "bench")
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("save deployments: %w (and %d more)", errs[0], len(errs)-1)
	}
	return nil
}

type execTrueArgs struct{}

func (execTrueArgs) Kind() string { return "bench.exec_true" }

type execTrueWorker struct {
	river.WorkerDefaults[execTrueArgs]
}

func (w *execTrueWorker) Work(ctx context.Context, _ *river.Job[execTrueArgs]) error {
	return exec.CommandContext(ctx, "true").Run()
}

// riverExecTime inserts n jobs that each run `true` with os/exec into a new
// database, and measures how long two River clients of scaleConcurrency,
// with the workers' fetch settings, take from the insert to the last
// completion.
func riverExecTime(ctx context.Context, env Env, n int) (time.Duration, error) {
	pool, err := newPool(ctx, env)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	workers := river.NewWorkers()
	river.AddWorker(workers, &execTrueWorker{})
	var clients []*river.Client[pgx.Tx]
	for range scaleWorkers {
		c, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
			Queues:            map[string]river.QueueConfig{domain.DefaultWorkQueue: {MaxWorkers: scaleConcurrency}},
			Workers:           workers,
			FetchCooldown:     FetchCooldown,
			FetchPollInterval: FetchPollInterval,
			JobTimeout:        -1,
			Logger:            quiet,
		})
		if err != nil {
			return 0, err
		}
		if err := c.Start(ctx); err != nil {
			return 0, err
		}
		defer c.Stop(context.WithoutCancel(ctx)) //nolint:errcheck // measured
		clients = append(clients, c)
	}
	params := make([]river.InsertManyParams, n)
	for i := range params {
		params[i] = river.InsertManyParams{Args: execTrueArgs{}}
	}
	began := time.Now()
	if _, err := clients[0].InsertManyFast(ctx, params); err != nil {
		return 0, err
	}
	for {
		var left int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE state <> 'completed'`).Scan(&left); err != nil {
			return 0, err
		}
		if left == 0 {
			return time.Since(began), nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func schedulesScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	n, period := opts.Sizes.ScheduledDeployments, opts.Sizes.SchedulePeriod
	m, err := MeasureSchedulesAtScale(ctx, env, n, period)
	if err != nil {
		return nil, err
	}
	l := m.Lateness
	if len(l) == 0 {
		return nil, fmt.Errorf("none of the runs due in the first %d minutes started", scaleMinutes)
	}
	p50, p99, worst := percentile(l, 0.5), percentile(l, 0.99), l[len(l)-1]
	limit := 2000 + float64(m.Baseline.Milliseconds())
	return []Row{{
		What: fmt.Sprintf("schedules at scale: %s deployments on %s, one `true` task each, %d workers of concurrency %d: lateness of the %s runs due in the first %d whole periods after they were saved",
			count(n), scheduleName(period), scaleWorkers, scaleConcurrency, count(len(l)), scaleMinutes),
		Ordo:     fmt.Sprintf("p50 %s, p99 %s, max %s of those that started; %d not started 5 min after", millis(p50), millis(p99), millis(worst), m.Missing),
		Baseline: fmt.Sprintf("raw River + os/exec runs %s `true` commands in %s", count(n), seconds(m.Baseline)),
		Target:   fmt.Sprintf("p99 ≤ 2 s + the baseline (%s)", millis(limit)),
		Checks:   []Check{atMost("p99 ms", p99, limit), atMost("runs not started", float64(m.Missing), 0)},
		Metrics: positive(map[string]float64{
			"p50_ms": p50, "p99_ms": p99, "max_ms": worst, "runs": float64(len(l)), "baseline_ms": float64(m.Baseline.Milliseconds()),
			"missing": float64(m.Missing), "save_s": m.Saved.Seconds(), "runs_ahead": float64(m.RunsAhead), "ahead_s": m.AheadTook.Seconds(), "ahead_bytes": float64(m.AheadBytes),
		}),
		Note: fmt.Sprintf("saving the deployments took %s; the scheduler had created their %s runs an hour ahead %s after the saves began, and the database grew by %s",
			seconds(m.Saved), count(m.RunsAhead), seconds(m.AheadTook), mib(m.AheadBytes)),
	}}, nil
}

// positive leaves out the figures that are zero (none missing, say).
func positive(m map[string]float64) map[string]float64 {
	for k, v := range m {
		if v == 0 {
			delete(m, k)
		}
	}
	return m
}

func scheduleName(period time.Duration) string {
	if period == time.Minute {
		return "a 1-minute cron"
	}
	return "a " + period.String() + " interval"
}
