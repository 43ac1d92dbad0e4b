package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/jobs"
)

// ScheduleLateness is scenario 7: a deployment of one no-op task on a 1 s
// interval schedule, with a scheduler, a due timer and a worker as a server
// and a worker run them, and the lateness of its first runs in
// milliseconds, sorted: from each run's due time to its first task
// running, as the log records them.
func ScheduleLateness(ctx context.Context, env Env, runs int) ([]float64, error) {
	return scheduleLateness(ctx, env, runs, nil)
}

// scheduleLateness is ScheduleLateness with load, when not nil, running on
// the same database from the deployment's creation until the runs are
// measured.
func scheduleLateness(ctx context.Context, env Env, runs int, load func(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store)) ([]float64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pool, err := newPool(ctx, env)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	store := eventstore.New(pool, domain.NewRegistry())
	defer store.Close()
	client, err := jobs.NewInsertClient(pool)
	if err != nil {
		return nil, err
	}
	due := jobs.NewDueTimer(pool, jobs.DueTimerOptions{Logger: quiet})
	go func() { _ = due.Run(ctx) }()
	svc := commands.NewService(pool, store, jobs.RiverEnqueuer(client), commands.ServiceOptions{DueTimer: due})
	w, err := jobs.NewWorker(pool, store, jobs.WorkerOptions{
		Queues: []string{domain.DefaultWorkQueue}, Handlers: NoopHandlers(), Logger: quiet,
		WorkspaceDir: filepath.Join(env.TempDir, "workspaces"), DisableDueTimer: true,
	})
	if err != nil {
		return nil, err
	}
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	defer w.Stop(context.WithoutCancel(ctx)) //nolint:errcheck // the measures are taken
	s, err := jobs.NewScheduler(pool, svc, jobs.SchedulerOptions{Logger: quiet})
	if err != nil {
		return nil, err
	}
	go func() { _ = s.Run(ctx) }()
	d, _, err := commands.NewDeploymentCommands(store).DeploymentSave(ctx, domain.DeploymentSpec{
		Name: "lateness", Schedule: &domain.Schedule{IntervalSeconds: 1}, CatchUp: domain.CatchUpAll,
		Flow: domain.FlowSpec{Name: "lateness", Tasks: []domain.TaskSpec{{Name: "t", Handler: NoopHandler}}},
	}, "bench")
	if err != nil {
		return nil, err
	}

	if load != nil {
		done := make(chan struct{})
		defer func() { cancel(); <-done }()
		go func() { defer close(done); load(ctx, pool, store) }()
	}

	// Runs due from 2 s on: the first one may be due before the scheduler
	// saw the deployment.
	from := time.Now().Add(2 * time.Second)
	deadline := from.Add(time.Duration(runs)*time.Second + 30*time.Second)
	env.logf("%d runs due one a second, from %s", runs, from.Format(time.TimeOnly))
	var lateness []float64
	for len(lateness) < runs {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("only %d of %d runs started by %s", len(lateness), runs, deadline.Format(time.TimeOnly))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
		rows, err := pool.Query(ctx, `
SELECT extract(epoch FROM min(s.recorded_at) - (f.data->>'scheduled_at')::timestamptz)::float8 * 1000
FROM events f
JOIN events c ON c.type = 'TaskRunCreated' AND c.data->>'flow_run_id' = f.stream_id::text
JOIN events s ON s.type = 'TaskRunStarted' AND s.stream_id = c.stream_id
WHERE f.type = 'FlowRunCreated' AND f.data->>'deployment_id' = $1 AND (f.data->>'scheduled_at')::timestamptz >= $2
GROUP BY f.stream_id, f.data->>'scheduled_at'
ORDER BY (f.data->>'scheduled_at')::timestamptz
LIMIT $3`, d.ID.String(), from, runs)
		if err != nil {
			return nil, err
		}
		if lateness, err = pgx.CollectRows(rows, pgx.RowTo[float64]); err != nil {
			return nil, err
		}
	}
	slices.Sort(lateness)
	return lateness, nil
}

func latenessScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	n := opts.Sizes.LatenessRuns
	l, err := ScheduleLateness(ctx, env, n)
	if err != nil {
		return nil, err
	}
	p50, p99, worst := percentile(l, 0.5), percentile(l, 0.99), l[len(l)-1]
	return []Row{{
		What:    fmt.Sprintf("schedule lateness, 1 s interval, %d runs (due time → first task running)", n),
		Ordo:    fmt.Sprintf("p50 %s, p99 %s, max %s", millis(p50), millis(p99), millis(worst)),
		Target:  "p99 ≤ 1 s",
		Checks:  []Check{atMost("p99 ms", p99, 1000)},
		Metrics: map[string]float64{"p50_ms": p50, "p99_ms": p99, "max_ms": worst, "runs": float64(len(l))},
	}}, nil
}
