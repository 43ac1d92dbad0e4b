package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/bench"
	"github.com/ordoflow/ordo/internal/bench/benchtest"
	"github.com/ordoflow/ordo/jobs"
)

// schedBundle is a test database with the deployment write side.
type schedBundle struct {
	testBundle
	deployments *commands.DeploymentCommands
	runs        *commands.DeploymentRuns
}

func schedSetup(t *testing.T) schedBundle {
	t.Helper()
	b := setup(t)
	return schedBundle{testBundle: b, deployments: commands.NewDeploymentCommands(b.store), runs: commands.NewDeploymentRuns(b.svc)}
}

var noopHandlers = func() *jobs.Handlers {
	var h jobs.Handlers
	h.Handle("noop", func(context.Context, jobs.TaskContext) (any, error) { return nil, nil })
	return &h
}()

// scheduledSpec is a deployment of one no-op handler task on the given
// schedule.
func scheduledSpec(name string, sched *domain.Schedule) domain.DeploymentSpec {
	return domain.DeploymentSpec{Name: name, Schedule: sched, Flow: domain.FlowSpec{Name: name, Tasks: []domain.TaskSpec{
		{Name: "t", Handler: "noop"},
	}}}
}

func every(seconds float64) *domain.Schedule { return &domain.Schedule{IntervalSeconds: seconds} }

func (b schedBundle) deploy(t *testing.T, spec domain.DeploymentSpec) domain.Deployment {
	t.Helper()
	d, _, err := b.deployments.DeploymentSave(t.Context(), spec, "token:test")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (b schedBundle) scheduler(t *testing.T, opts jobs.SchedulerOptions) *jobs.Scheduler {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger
	}
	// Unless a test is about how the work is spread, one tick does all of
	// it.
	if opts.RunsPerTx == 0 {
		opts.RunsPerTx = 10000
	}
	if opts.RunsPerTick == 0 {
		opts.RunsPerTick = 1_000_000
	}
	s, err := jobs.NewScheduler(b.pool, b.svc, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tick(t *testing.T, s *jobs.Scheduler) {
	t.Helper()
	if _, err := s.Tick(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// runScheduler runs s until the test ends.
func runScheduler(t *testing.T, s *jobs.Scheduler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(ctx)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// runsOf returns every run of the deployment, by scheduled time.
func (b schedBundle) runsOf(t *testing.T, deploymentID uuid.UUID) []domain.FlowRun {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), `
SELECT stream_id FROM events WHERE type = 'FlowRunCreated' AND data->>'deployment_id' = $1`, deploymentID.String())
	if err != nil {
		t.Fatal(err)
	}
	var ids []uuid.UUID
	for rows.Next() {
		var id uuid.UUID
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	runs := make([]domain.FlowRun, len(ids))
	for i, id := range ids {
		runs[i] = b.flowRun(t, id)
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].ScheduledAt.Before(runs[j].ScheduledAt) })
	return runs
}

// slot is a row of scheduled_runs: a scheduled time and its run.
type slot struct {
	at  time.Time
	run domain.FlowRun
}

// slots returns the scheduler's runs of the deployment by the scheduled
// time they stand for.
func (b schedBundle) slots(t *testing.T, deploymentID uuid.UUID) []slot {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), `
SELECT scheduled_at, flow_run_id FROM scheduled_runs WHERE deployment_id = $1 ORDER BY scheduled_at`, deploymentID)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		at time.Time
		id uuid.UUID
	}
	var got []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.at, &r.id); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	out := make([]slot, len(got))
	for i, r := range got {
		out[i] = slot{at: r.at, run: b.flowRun(t, r.id)}
	}
	return out
}

// lastEvent returns the last event of a stream of the given type.
func (b schedBundle) lastEvent(t *testing.T, id uuid.UUID, eventType string) (domain.Envelope, bool) {
	t.Helper()
	envs, err := b.store.ReadStream(context.Background(), b.pool, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(envs) - 1; i >= 0; i-- {
		if envs[i].Type == eventType {
			return envs[i], true
		}
	}
	return domain.Envelope{}, false
}

// assertCancelled checks that the run ended CANCELLED for reason, with its
// task runs cancelled and no River job left.
func (b schedBundle) assertCancelled(t *testing.T, fr domain.FlowRun, reason string) {
	t.Helper()
	fr = b.flowRun(t, fr.ID)
	e, ok := b.lastEvent(t, fr.ID, "FlowRunCancelled")
	if fr.State.Type != domain.Cancelled || !ok || e.Metadata.Reason != reason {
		t.Errorf("run at %s is %s (cancel reason %q), want CANCELLED because %q", fr.ScheduledAt, fr.State.Type, e.Metadata.Reason, reason)
		return
	}
	for name, h := range b.tasks(t, fr) {
		if h.run.State.Type != domain.Cancelled {
			t.Errorf("task run %s of a cancelled run is %s", name, h.run.State.Type)
		}
	}
	var jobsLeft int
	if err := b.pool.QueryRow(context.Background(), `
SELECT count(*) FROM river_job WHERE args->>'flow_run_id' = $1 AND state IN ('available', 'scheduled')`, fr.ID.String()).Scan(&jobsLeft); err != nil {
		t.Fatal(err)
	}
	if jobsLeft != 0 {
		t.Errorf("cancelled run at %s still has %d queued jobs", fr.ScheduledAt, jobsLeft)
	}
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkGrid checks that times are consecutive multiples of step, each once.
func checkGrid(t *testing.T, times []time.Time, step time.Duration) {
	t.Helper()
	for i, at := range times {
		if !at.Equal(at.Truncate(step)) {
			t.Errorf("run at %s is not on the %v grid", at.Format(time.RFC3339Nano), step)
		}
		if i > 0 && at.Sub(times[i-1]) != step {
			t.Errorf("runs at %s then %s: want one every %v, no gap and no duplicate", times[i-1].Format(time.RFC3339Nano), at.Format(time.RFC3339Nano), step)
		}
	}
}

func TestSchedulerCreatesRunsAhead(t *testing.T) {
	t.Parallel()

	t.Run("LookaheadAndNoDuplicates", func(t *testing.T) {
		t.Parallel()
		b := schedSetup(t)
		d := b.deploy(t, scheduledSpec("every-second", every(1)))
		base := time.Now()
		clock := base
		s := b.scheduler(t, jobs.SchedulerOptions{Lookahead: 5 * time.Second, Now: func() time.Time { return clock }})
		tick(t, s)
		runs := b.runsOf(t, d.ID)
		var times []time.Time
		for _, r := range runs {
			times = append(times, r.ScheduledAt)
			if !r.AutoScheduled || r.DeploymentID != d.ID || r.DeploymentName != "every-second" || r.WorkQueue != domain.DefaultWorkQueue {
				t.Errorf("run %+v: want an auto-scheduled run of the deployment", r)
			}
			if r.ScheduledAt.After(base) && (r.State.Type != domain.Scheduled || r.State.Name != domain.NameScheduled) {
				t.Errorf("run at %s is %s/%s, want SCHEDULED", r.ScheduledAt, r.State.Type, r.State.Name)
			}
		}
		checkGrid(t, times, time.Second)
		if len(runs) < 5 || len(runs) > 7 || runs[len(runs)-1].ScheduledAt.Before(base.Add(4*time.Second)) {
			t.Fatalf("%d runs up to %s, want every second up to %s", len(runs), times[len(times)-1], base.Add(5*time.Second))
		}

		tick(t, s) // nothing more to do
		if again := b.runsOf(t, d.ID); len(again) != len(runs) {
			t.Fatalf("a second tick made %d runs into %d", len(runs), len(again))
		}
		// A second scheduler (another server) at the same time creates nothing.
		tick(t, b.scheduler(t, jobs.SchedulerOptions{Lookahead: 5 * time.Second, Now: func() time.Time { return base }}))
		if again := b.runsOf(t, d.ID); len(again) != len(runs) {
			t.Fatalf("a second scheduler made %d runs into %d", len(runs), len(again))
		}

		clock = base.Add(3 * time.Second)
		tick(t, s)
		later := b.runsOf(t, d.ID)
		if len(later) != len(runs)+3 {
			t.Errorf("3 s later: %d runs, want %d", len(later), len(runs)+3)
		}
		times = times[:0]
		for _, r := range later {
			times = append(times, r.ScheduledAt)
		}
		checkGrid(t, times, time.Second)
		b.validate(t)
	})

	t.Run("MinRunsAndMaxRuns", func(t *testing.T) {
		t.Parallel()
		b := schedSetup(t)
		hourly := b.deploy(t, scheduledSpec("hourly", &domain.Schedule{Cron: "0 * * * *", Timezone: "Europe/Paris"}))
		fast := b.deploy(t, scheduledSpec("fast", every(1)))
		tick(t, b.scheduler(t, jobs.SchedulerOptions{Lookahead: time.Minute, MinRuns: 3, MaxRuns: 10}))
		var times []time.Time
		for _, r := range b.runsOf(t, hourly.ID) {
			times = append(times, r.ScheduledAt)
		}
		if len(times) != 3 {
			t.Errorf("an hourly schedule with a 1 min lookahead has %d runs, want MinRuns = 3", len(times))
		}
		checkGrid(t, times, time.Hour)
		if n := len(b.runsOf(t, fast.ID)); n < 10 || n > 11 {
			t.Errorf("a 1 s schedule with a 1 min lookahead has %d runs, want MaxRuns = 10 (and one just due)", n)
		}
	})
}

// Two servers scheduling one database at once, each with its own pool and
// its own leader connection: the leader's connection is killed, then the
// leader stops; every second still has exactly one run, and runs start on
// time on a worker. ORDO_SCHEDULER_SOAK sets the length (default 20s).
func TestSchedulerTwoServersNoDuplicateNoGap(t *testing.T) {
	t.Parallel()
	length := 20 * time.Second
	if v := os.Getenv("ORDO_SCHEDULER_SOAK"); v != "" {
		var err error
		if length, err = time.ParseDuration(v); err != nil {
			t.Fatalf("ORDO_SCHEDULER_SOAK: %v", err)
		}
	}
	b := schedSetup(t)
	b.startWorker(t, jobs.WorkerOptions{Handlers: noopHandlers})
	spec := scheduledSpec("soak", every(1))
	spec.CatchUp = domain.CatchUpAll
	d := b.deploy(t, spec)

	type server struct {
		sched  *jobs.Scheduler
		cancel context.CancelFunc
		done   chan struct{}
	}
	start := func(pool *pgxpool.Pool, store *eventstore.Store, svc *commands.Service) *server {
		s, err := jobs.NewScheduler(pool, svc, jobs.SchedulerOptions{Interval: 200 * time.Millisecond, Logger: quietLogger})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		srv := &server{sched: s, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(srv.done)
			_ = s.Run(ctx)
		}()
		t.Cleanup(func() { cancel(); <-srv.done })
		return srv
	}
	cfg := b.pool.Config().Copy()
	pool2, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool2.Close)
	store2 := eventstore.New(pool2, domain.NewRegistry())
	t.Cleanup(store2.Close)
	client2, err := jobs.NewInsertClient(pool2)
	if err != nil {
		t.Fatal(err)
	}
	servers := []*server{
		start(b.pool, b.store, b.svc),
		start(pool2, store2, commands.NewService(pool2, store2, jobs.RiverEnqueuer(client2), commands.ServiceOptions{})),
	}
	leader := func() int {
		var found = -1
		eventually(t, time.Minute, "no scheduler became the leader", func() bool {
			for i, s := range servers {
				if s.sched.IsLeader() {
					found = i
					return true
				}
			}
			return false
		})
		return found
	}

	began := time.Now()
	time.Sleep(length / 3)
	// The leader's connection dies: the lock goes with it, and a leader
	// takes it again.
	var killed int
	if err := b.pool.QueryRow(t.Context(), `
SELECT count(pg_terminate_backend(pid)) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND (classid::bigint << 32 | objid::bigint) = $1`, int64(0x6f72646f73636865)).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Fatalf("%d sessions held the scheduler lock, want 1", killed)
	}
	time.Sleep(length / 3)
	// The leader stops: the other takes over.
	first := leader()
	servers[first].cancel()
	<-servers[first].done
	if servers[first].sched.IsLeader() {
		t.Fatal("a stopped scheduler still says it leads")
	}
	if other := leader(); other == first {
		t.Fatal("the stopped scheduler leads")
	}
	time.Sleep(length - time.Since(began))
	ended := time.Now()

	runs := b.runsOf(t, d.ID)
	var times []time.Time
	for _, r := range runs {
		times = append(times, r.ScheduledAt)
	}
	checkGrid(t, times, time.Second)
	if len(times) == 0 || times[0].After(began.Add(2*time.Second)) || times[len(times)-1].Before(ended) {
		t.Fatalf("runs from %v to %v, want every second from the start (%v) to beyond the end (%v)", times[0], times[len(times)-1], began, ended)
	}
	var lateness []time.Duration
	for _, r := range runs {
		if r.ScheduledAt.After(ended.Add(-2 * time.Second)) {
			break
		}
		fr := b.wait(t, r.ID)
		if fr.State.Type != domain.Completed {
			t.Errorf("run at %s ended %s", r.ScheduledAt, fr.State.Type)
			continue
		}
		lateness = append(lateness, fr.StartedAt.Sub(r.ScheduledAt))
	}
	slices.Sort(lateness)
	t.Logf("%d runs over %v; lateness of %d started runs: min %v, median %v, max %v",
		len(runs), length, len(lateness), lateness[0], lateness[len(lateness)/2], lateness[len(lateness)-1])
	if lateness[len(lateness)-1] > 2*time.Second {
		t.Errorf("a run started %v after its time", lateness[len(lateness)-1])
	}
	b.validate(t)
}

func TestSchedulerPauseResumeDelete(t *testing.T) {
	t.Parallel()
	b := schedSetup(t)
	ctx := t.Context()
	d := b.deploy(t, scheduledSpec("pausable", every(10)))
	s := b.scheduler(t, jobs.SchedulerOptions{Lookahead: time.Minute})
	tick(t, s)
	before := b.runsOf(t, d.ID)
	if len(before) < 6 {
		t.Fatalf("%d runs for a minute of a 10 s schedule", len(before))
	}

	if _, err := b.deployments.DeploymentPause(ctx, d.ID, "token:ops"); err != nil {
		t.Fatal(err)
	}
	// The pause cancelled them in its own transaction.
	for _, r := range before {
		b.assertCancelled(t, r, commands.ReasonDeploymentPaused)
	}
	tick(t, s)
	if n := len(b.runsOf(t, d.ID)); n != len(before) {
		t.Fatalf("a paused deployment got %d new runs", n-len(before))
	}

	if _, err := b.deployments.DeploymentResume(ctx, d.ID, "token:ops"); err != nil {
		t.Fatal(err)
	}
	tick(t, s)
	var fresh []domain.FlowRun
	for _, r := range b.runsOf(t, d.ID) {
		if r.State.Type == domain.Scheduled {
			fresh = append(fresh, r)
		}
	}
	if len(fresh) < 6 {
		t.Fatalf("%d scheduled runs after resume, want a minute of them again", len(fresh))
	}

	if _, err := b.deployments.DeploymentDelete(ctx, d.ID, "token:ops"); err != nil {
		t.Fatal(err)
	}
	for _, r := range fresh {
		b.assertCancelled(t, r, commands.ReasonDeploymentDeleted)
	}
	tick(t, s)
	var cursors int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM deployment_schedules WHERE deployment_id = $1`, d.ID).Scan(&cursors); err != nil {
		t.Fatal(err)
	}
	if cursors != 0 {
		t.Error("the schedule of a deleted deployment is still followed")
	}
	b.validate(t)
}

func TestSchedulerScheduleChange(t *testing.T) {
	t.Parallel()
	b := schedSetup(t)
	d := b.deploy(t, scheduledSpec("changing", every(2)))
	s := b.scheduler(t, jobs.SchedulerOptions{Lookahead: 20 * time.Second})
	tick(t, s)
	old := b.runsOf(t, d.ID)

	// A change that does not touch the runs keeps them.
	spec := d.Spec
	spec.Description = "now documented"
	b.deploy(t, spec)
	tick(t, s)
	for _, r := range old {
		if fr := b.flowRun(t, r.ID); fr.State.Type == domain.Cancelled {
			t.Fatal("a description change cancelled scheduled runs")
		}
	}

	spec.Schedule = every(3)
	b.deploy(t, spec)
	for _, r := range old {
		if r.ScheduledAt.After(time.Now().Add(time.Second)) {
			b.assertCancelled(t, r, commands.ReasonScheduleChanged)
		}
	}
	tick(t, s)
	var times []time.Time
	for _, r := range b.runsOf(t, d.ID) {
		if r.State.Type == domain.Scheduled && r.DeploymentVersion == 3 {
			times = append(times, r.ScheduledAt)
		}
	}
	if len(times) < 6 {
		t.Fatalf("%d runs on the new schedule, want 20 s of a 3 s schedule", len(times))
	}
	checkGrid(t, times, 3*time.Second)

	// Changing the flow recreates the upcoming runs with it.
	spec.Flow.Tasks = append(spec.Flow.Tasks, domain.TaskSpec{Name: "u", Handler: "noop", DependsOn: []string{"t"}})
	b.deploy(t, spec)
	tick(t, s)
	for _, r := range b.runsOf(t, d.ID) {
		switch r.DeploymentVersion {
		case 3:
			if r.ScheduledAt.After(time.Now().Add(time.Second)) {
				b.assertCancelled(t, r, "deployment changed: flow")
			}
		case 4:
			if len(r.Flow.Tasks) != 2 {
				t.Errorf("a run created after the flow changed has %d tasks", len(r.Flow.Tasks))
			}
		}
	}
	b.validate(t)
}

// A running scheduler hears of a new deployment at once (LISTEN on the
// events channel), not at its next Interval.
func TestSchedulerWakesOnDeploymentChange(t *testing.T) {
	t.Parallel()
	b := schedSetup(t)
	// Without the wake-up, its next tick would come an Interval later: the
	// bound is a tenth of that, so that a loaded machine cannot fail it.
	const interval = 10 * time.Minute
	s := b.scheduler(t, jobs.SchedulerOptions{Interval: interval})
	runScheduler(t, s)
	eventually(t, time.Minute, "the scheduler did not lead", s.IsLeader)
	time.Sleep(200 * time.Millisecond) // its first tick is over
	deployed := time.Now()
	d := b.deploy(t, scheduledSpec("heard", every(5)))
	eventually(t, interval/10, "no run was created for a new deployment", func() bool { return len(b.runsOf(t, d.ID)) > 0 })
	t.Logf("first runs %v after the deployment", time.Since(deployed))
}

// With no worker for the queue, runs become late; catch_up decides what
// happens to them when a worker comes.
func TestSchedulerLateRunsAndCatchUpWithoutWorker(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{domain.CatchUpAll, domain.CatchUpLatest, domain.CatchUpNone} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			b := schedSetup(t)
			spec := scheduledSpec("late-"+policy, every(1))
			spec.CatchUp = policy
			d := b.deploy(t, spec)
			stop := runScheduler(t, b.scheduler(t, jobs.SchedulerOptions{
				Lookahead: 3 * time.Second, LateAfter: time.Second, Interval: 100 * time.Millisecond,
			}))
			// Until the scheduler has dealt with (made late, or cancelled)
			// the runs of at least three ticks, however slowly a loaded
			// machine lets it; stopped then, so that no newer run turns
			// late, and under catch_up latest cancels the run kept here,
			// before the worker takes it.
			var cutoff time.Time // the latest due time dealt with
			eventually(t, 2*time.Minute, "the scheduler dealt with no late run", func() bool {
				dealt := 0
				for _, r := range b.runsOf(t, d.ID) {
					if fr := b.flowRun(t, r.ID); fr.State.Type == domain.Cancelled || fr.State.Name == domain.NameLate {
						dealt++
						if r.ScheduledAt.After(cutoff) {
							cutoff = r.ScheduledAt
						}
					}
				}
				return dealt >= 3
			})
			stop()
			cutoff = cutoff.Add(time.Nanosecond) // runs due before it, and so by it, were dealt with

			var late []domain.FlowRun
			for _, r := range b.runsOf(t, d.ID) {
				if r.ScheduledAt.Before(cutoff) {
					late = append(late, r)
				}
			}
			if len(late) < 2 {
				t.Fatalf("%d runs due before %v", len(late), cutoff)
			}
			var kept []domain.FlowRun
			for _, r := range late {
				e, ok := b.lastEvent(t, r.ID, "FlowRunLate")
				fr := b.flowRun(t, r.ID)
				switch {
				case fr.State.Type == domain.Cancelled:
				case fr.State.Type != domain.Scheduled || fr.State.Name != domain.NameLate:
					t.Errorf("run due at %s with no worker is %s/%s, want SCHEDULED/Late", r.ScheduledAt, fr.State.Type, fr.State.Name)
				case !ok || e.Metadata.Reason != "not started within 1s of its scheduled time" || e.Metadata.Actor != commands.SchedulerActor:
					t.Errorf("FlowRunLate of the run at %s: %+v", r.ScheduledAt, e.Metadata)
				default:
					kept = append(kept, fr)
				}
			}
			switch policy {
			case domain.CatchUpAll:
				if len(kept) != len(late) {
					t.Errorf("catch_up all kept %d of %d late runs", len(kept), len(late))
				}
			case domain.CatchUpLatest:
				if len(kept) > 1 {
					t.Errorf("catch_up latest kept %d late runs, want at most the newest", len(kept))
				}
				for _, r := range late[:len(late)-1] {
					b.assertCancelled(t, r, commands.ReasonCatchUpLatest)
				}
			case domain.CatchUpNone:
				if len(kept) != 0 {
					t.Errorf("catch_up none kept %d late runs", len(kept))
				}
				for _, r := range late {
					b.assertCancelled(t, r, commands.ReasonCatchUpNone)
				}
			}

			// A worker comes: what was kept runs.
			b.startWorker(t, jobs.WorkerOptions{Handlers: noopHandlers})
			for _, r := range kept {
				if fr := b.wait(t, r.ID); fr.State.Type != domain.Completed {
					t.Errorf("late run at %s ended %s once a worker came", r.ScheduledAt, fr.State.Type)
				}
			}
			b.validate(t)
		})
	}
}

// Catch-up after downtime: the scheduler comes back 10 minutes after it
// created a few runs ahead (its clock says so), with no worker meanwhile.
func TestSchedulerCatchUpAfterDowntime(t *testing.T) {
	t.Parallel()
	const downtime = 10 * time.Minute
	for _, policy := range []string{domain.CatchUpAll, domain.CatchUpLatest, domain.CatchUpNone} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			b := schedSetup(t)
			spec := scheduledSpec("down-"+policy, every(1))
			spec.CatchUp = policy
			d := b.deploy(t, spec)
			opts := jobs.SchedulerOptions{Lookahead: 3 * time.Second, MaxCatchUp: 5}
			tick(t, b.scheduler(t, opts))
			before := b.slots(t, d.ID)

			back := time.Now().Add(downtime)
			opts.Now = func() time.Time { return back }
			tick(t, b.scheduler(t, opts))
			lastMissed := back.Add(-15 * time.Second).Truncate(time.Second)

			var missed []slot
			for _, s := range b.slots(t, d.ID) {
				if s.at.After(before[len(before)-1].at) && !s.at.After(lastMissed) {
					missed = append(missed, s)
				}
			}
			var missedTimes []time.Time
			for _, s := range missed {
				missedTimes = append(missedTimes, s.at)
			}
			checkGrid(t, missedTimes, time.Second)
			switch policy {
			case domain.CatchUpAll:
				if len(missed) != 5 || !missed[4].at.Equal(lastMissed) {
					t.Errorf("catch_up all created runs for %v, want the latest 5 (MaxCatchUp) missed times up to %v", missedTimes, lastMissed)
				}
				for _, s := range before {
					fr := b.flowRun(t, s.run.ID)
					if fr.State.Name != domain.NameLate {
						t.Errorf("run at %s from before the downtime is %s/%s, want Late", s.at, fr.State.Type, fr.State.Name)
					}
				}
			case domain.CatchUpLatest:
				if len(missed) != 1 || !missed[0].at.Equal(lastMissed) {
					t.Errorf("catch_up latest created runs for %v, want one for %v", missedTimes, lastMissed)
				}
				for _, s := range before {
					b.assertCancelled(t, s.run, commands.ReasonCatchUpLatest)
				}
			case domain.CatchUpNone:
				if len(missed) != 0 {
					t.Errorf("catch_up none created runs for %v", missedTimes)
				}
				for _, s := range before {
					b.assertCancelled(t, s.run, commands.ReasonCatchUpNone)
				}
			}
			// And the schedule goes on from there.
			var ahead []time.Time
			for _, s := range b.slots(t, d.ID) {
				if s.at.After(lastMissed) {
					ahead = append(ahead, s.at)
				}
			}
			checkGrid(t, ahead, time.Second)
			if len(ahead) < 15 || !ahead[0].Equal(lastMissed.Add(time.Second)) || ahead[len(ahead)-1].Before(back.Add(2*time.Second)) {
				t.Errorf("after catching up, runs at %v, want every second from %v to %v", ahead, lastMissed.Add(time.Second), back.Add(3*time.Second))
			}
			b.validate(t)
		})
	}
}

func countEvents(t *testing.T, b schedBundle) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDeploymentInvalidInputStoresNothing(t *testing.T) {
	t.Parallel()
	b := schedSetup(t)
	schema := []byte(`{"type": "object", "properties": {"test_size": {"type": "number", "maximum": 1}}}`)
	for _, tc := range []struct {
		name  string
		edit  func(*domain.DeploymentSpec)
		field string
	}{
		{"InvalidCron", func(s *domain.DeploymentSpec) { s.Schedule = &domain.Schedule{Cron: "*/5 * * *"} }, "schedule.cron"},
		{"UnknownTimezone", func(s *domain.DeploymentSpec) {
			s.Schedule = &domain.Schedule{Cron: "0 3 * * *", Timezone: "Europe/Atlantis"}
		}, "schedule.timezone"},
		{"ZeroInterval", func(s *domain.DeploymentSpec) { s.Schedule = &domain.Schedule{} }, "schedule"},
		{"NegativeInterval", func(s *domain.DeploymentSpec) { s.Schedule = every(-5) }, "schedule.interval_seconds"},
		{"ParametersFailTheSchema", func(s *domain.DeploymentSpec) {
			s.ParametersSchema, s.Parameters = schema, map[string]any{"test_size": 2}
		}, "parameters.test_size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := scheduledSpec("bad", every(60))
			tc.edit(&spec)
			_, _, err := b.deployments.DeploymentSave(t.Context(), spec, "token:test")
			var de *domain.Error
			if !errors.As(err, &de) || de.Code != domain.CodeInvalid || !slices.ContainsFunc(de.Details, func(d domain.Detail) bool { return d.Field == tc.field }) {
				t.Fatalf("got %v, want an invalid error naming %s", err, tc.field)
			}
			if n := countEvents(t, b); n != 0 {
				t.Fatalf("%d events stored for an invalid deployment", n)
			}
		})
	}

	spec := scheduledSpec("checked", nil)
	spec.ParametersSchema, spec.Parameters = schema, map[string]any{"test_size": 0.2}
	d := b.deploy(t, spec)
	n := countEvents(t, b)
	_, err := b.runs.RunFromDeployment(t.Context(), d.ID, commands.RunRequest{Parameters: map[string]any{"test_size": "big"}}, "token:test")
	var de *domain.Error
	if !errors.As(err, &de) || de.Code != domain.CodeInvalid || len(de.Details) == 0 || de.Details[0].Field != "parameters.test_size" {
		t.Fatalf("run with bad parameters: %v, want an invalid error naming parameters.test_size", err)
	}
	if _, err := b.runs.RunFromDeployment(t.Context(), uuid.New(), commands.RunRequest{}, "token:test"); domain.ErrorCode(err) != domain.CodeNotFound {
		t.Fatalf("run of an unknown deployment: %v", err)
	}
	if m := countEvents(t, b); m != n {
		t.Fatalf("%d events stored by refused runs", m-n)
	}
}

func TestDeploymentRunFromDeployment(t *testing.T) {
	t.Parallel()
	b := schedSetup(t)
	ctx := t.Context()
	spec := scheduledSpec("manual", nil)
	spec.Parameters = map[string]any{"table": "houses", "test_size": 0.2}
	spec.WorkQueue, spec.Tags = "ml", []string{"prod"}
	d := b.deploy(t, spec)

	at := time.Now().Add(time.Hour).Truncate(time.Second)
	fr, err := b.runs.RunFromDeployment(ctx, d.ID, commands.RunRequest{
		Parameters: map[string]any{"test_size": 0.3}, Name: "nightly-rerun", ScheduledAt: at,
	}, "token:alice")
	if err != nil {
		t.Fatal(err)
	}
	if fr.State.Type != domain.Scheduled || !fr.ScheduledAt.Equal(at) || fr.Name != "nightly-rerun" || fr.AutoScheduled ||
		fr.WorkQueue != "ml" || !slices.Equal(fr.Tags, []string{"prod"}) || fr.DeploymentVersion != 1 {
		t.Fatalf("run %+v", fr)
	}
	if fr.Parameters["table"] != "houses" || fr.Parameters["test_size"] != 0.3 {
		t.Errorf("parameters %v, want the defaults with test_size overridden", fr.Parameters)
	}

	// Concurrent requests with one idempotency key make one run.
	var wg sync.WaitGroup
	ids := make([]uuid.UUID, 5)
	errs := make([]error, 5)
	for i := range ids {
		wg.Go(func() {
			r, err := b.runs.RunFromDeployment(ctx, d.ID, commands.RunRequest{IdempotencyKey: "k1"}, "token:alice")
			ids[i], errs[i] = r.ID, err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("one idempotency key made runs %v", ids)
		}
	}
	if n := len(b.runsOf(t, d.ID)); n != 2 {
		t.Fatalf("%d runs, want 2", n)
	}
	b.validate(t)
}

// A deployment with concurrency_limit 1 whose task waits for the test.
func concurrencySetup(t *testing.T, policy string) (schedBundle, domain.Deployment, chan struct{}) {
	t.Helper()
	b := schedSetup(t)
	gate := make(chan struct{})
	var h jobs.Handlers
	h.Handle("gate", func(ctx context.Context, _ jobs.TaskContext) (any, error) {
		select {
		case <-gate:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	b.startWorker(t, jobs.WorkerOptions{Handlers: &h})
	spec := scheduledSpec("limited-"+policy, nil)
	spec.Flow.Tasks[0].Handler = "gate"
	spec.ConcurrencyLimit, spec.ConcurrencyPolicy = 1, policy
	return b, b.deploy(t, spec), gate
}

func (b schedBundle) started(t *testing.T, id uuid.UUID) bool {
	t.Helper()
	return b.flowRun(t, id).StartedAt != nil
}

func TestConcurrencyLimitEnqueue(t *testing.T) {
	t.Parallel()

	for _, release := range []string{"SchedulerTick", "ReleaseDeploymentSlots"} {
		t.Run(release, func(t *testing.T) {
			t.Parallel()
			b, d, gate := concurrencySetup(t, domain.ConcurrencyEnqueue)
			ctx := t.Context()
			var runs []domain.FlowRun
			for i := range 3 {
				fr, err := b.runs.RunFromDeployment(ctx, d.ID, commands.RunRequest{Name: fmt.Sprint("r", i)}, "token:test")
				if err != nil {
					t.Fatal(err)
				}
				runs = append(runs, fr)
			}
			if runs[0].State.Type != domain.Pending {
				t.Fatalf("the first run is %s, want PENDING: a slot was free", runs[0].State.Type)
			}
			for _, r := range runs[1:] {
				if r.State.Type != domain.Scheduled {
					t.Fatalf("run %s over the limit is %s, want SCHEDULED, waiting", r.Name, r.State.Type)
				}
			}
			eventually(t, time.Minute, "the first run did not start", func() bool { return b.started(t, runs[0].ID) })

			free := func() {
				t.Helper()
				switch release {
				case "SchedulerTick":
					tick(t, b.scheduler(t, jobs.SchedulerOptions{}))
				case "ReleaseDeploymentSlots":
					client, err := jobs.NewInsertClient(b.pool)
					if err != nil {
						t.Fatal(err)
					}
					tx, err := b.pool.Begin(ctx)
					if err != nil {
						t.Fatal(err)
					}
					defer tx.Rollback(ctx) //nolint:errcheck
					ended := []uuid.UUID{runs[0].ID, runs[1].ID, runs[2].ID}
					if _, err := commands.ReleaseDeploymentSlots(ctx, tx, b.store, jobs.RiverEnqueuer(client), ended, "worker:test"); err != nil {
						t.Fatal(err)
					}
					if err := tx.Commit(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			for i := range 2 {
				time.Sleep(300 * time.Millisecond)
				free() // nothing ended: nothing changes
				if b.started(t, runs[i+1].ID) {
					t.Fatalf("run %d started while run %d held the only slot", i+1, i)
				}
				gate <- struct{}{}
				if fr := b.wait(t, runs[i].ID); fr.State.Type != domain.Completed {
					t.Fatalf("run %d ended %s", i, fr.State.Type)
				}
				free()
				eventually(t, time.Minute, "the next waiting run did not start", func() bool { return b.started(t, runs[i+1].ID) })
				if b.started(t, runs[2].ID) && i == 0 {
					t.Fatal("two waiting runs started for one free slot")
				}
			}
			gate <- struct{}{}
			b.wait(t, runs[2].ID)
			for i := 1; i < 3; i++ {
				prev, cur := b.flowRun(t, runs[i-1].ID), b.flowRun(t, runs[i].ID)
				if cur.StartedAt.Before(*prev.EndedAt) {
					t.Errorf("run %d started at %v, before run %d ended at %v", i, cur.StartedAt, i-1, prev.EndedAt)
				}
				if e, ok := b.lastEvent(t, cur.ID, "FlowRunPending"); !ok || e.Metadata.Reason != commands.ReasonSlotFree {
					t.Errorf("run %d was admitted with %+v", i, e.Metadata)
				}
			}
			b.validate(t)
		})
	}
}

func TestConcurrencyLimitCancelNew(t *testing.T) {
	t.Parallel()
	b, d, gate := concurrencySetup(t, domain.ConcurrencyCancelNew)
	ctx := t.Context()
	first, err := b.runs.RunFromDeployment(ctx, d.ID, commands.RunRequest{}, "token:test")
	if err != nil {
		t.Fatal(err)
	}
	second, err := b.runs.RunFromDeployment(ctx, d.ID, commands.RunRequest{}, "token:test")
	if err != nil {
		t.Fatal(err)
	}
	if first.State.Type != domain.Pending || second.State.Type != domain.Cancelled {
		t.Fatalf("runs are %s and %s, want PENDING and CANCELLED", first.State.Type, second.State.Type)
	}
	b.assertCancelled(t, second, commands.ReasonConcurrencyLimit)
	gate <- struct{}{}
	if fr := b.wait(t, first.ID); fr.State.Type != domain.Completed {
		t.Fatalf("the first run ended %s", fr.State.Type)
	}
	// Its slot is free again (here through the scheduler's tick).
	tick(t, b.scheduler(t, jobs.SchedulerOptions{}))
	third, err := b.runs.RunFromDeployment(ctx, d.ID, commands.RunRequest{}, "token:test")
	if err != nil {
		t.Fatal(err)
	}
	if third.State.Type != domain.Pending {
		t.Fatalf("a run after the first ended is %s, want PENDING", third.State.Type)
	}
	gate <- struct{}{}
	b.wait(t, third.ID)
	b.validate(t)
}

// BenchmarkScheduleLateness is scenario 7 of `ordo bench`
// (internal/bench): from a run's due time to its first task running, for a
// 1 s schedule with a no-op Go handler task, a scheduler, a due timer and a
// worker, over 300 runs (5 minutes; 2 with -short). As a Go benchmark, to
// profile it:
//
//	make bench BENCH=BenchmarkScheduleLateness PKGS=./jobs BENCHFLAGS=-cpuprofile=cpu.out
func BenchmarkScheduleLateness(b *testing.B) { benchtest.Run(b, "lateness", bench.Options{}) }

// A deployment's runs ahead are created a few per transaction, the earliest
// first, and every deployment gets its first ones in the first tick: the
// run due next is never behind a whole hour of runs of its own or of other
// deployments. Once a deployment has a minute of runs ahead, the rest comes
// at most RunsPerTick a tick, one tick an Interval.
func TestSchedulerCreatesTheEarliestRunsFirst(t *testing.T) {
	t.Parallel()
	b := schedSetup(t)
	a := b.deploy(t, scheduledSpec("first", every(1)))
	c := b.deploy(t, scheduledSpec("second", every(1)))
	// Half a second off the runs' whole seconds: a millisecond later, no
	// run's time has passed.
	base := time.Now().Truncate(time.Second).Add(500 * time.Millisecond)
	clock := base
	s := b.scheduler(t, jobs.SchedulerOptions{RunsPerTx: 5, RunsPerTick: 7, Interval: time.Millisecond, Now: func() time.Time { return clock }})
	times := func(id uuid.UUID) []time.Time {
		var out []time.Time
		for _, r := range b.runsOf(t, id) {
			out = append(out, r.ScheduledAt)
		}
		return out
	}

	tick(t, s)
	for _, d := range []domain.Deployment{a, c} {
		got := times(d.ID)
		if len(got) != 5 {
			t.Fatalf("after the first tick %s has %d runs, want RunsPerTx = 5", d.Spec.Name, len(got))
		}
		checkGrid(t, got, time.Second)
		if first := got[0]; !first.After(base.Add(-time.Second)) || first.After(base.Add(time.Second)) {
			t.Fatalf("the first run of %s is at %s, want the second just due or the next one at %s", d.Spec.Name, first, base)
		}
	}

	// Up to a minute ahead, every tick creates more at once.
	for range 20 {
		tick(t, s)
	}
	for _, d := range []domain.Deployment{a, c} {
		got := times(d.ID)
		checkGrid(t, got, time.Second)
		if last := got[len(got)-1]; last.Before(base.Add(time.Minute)) || last.After(base.Add(time.Minute+5*time.Second)) {
			t.Fatalf("%s has runs up to %s, want a minute ahead of %s and no more while the clock stands", d.Spec.Name, last, base)
		}
	}

	// Beyond, RunsPerTick at a tick, shared. The runs just due have no
	// worker: once they have waited LateAfter, they no longer hold the rest
	// back.
	if _, err := b.pool.Exec(t.Context(), `UPDATE river_job SET scheduled_at = now() - interval '1 minute' WHERE state = 'available'`); err != nil {
		t.Fatal(err)
	}
	before := len(times(a.ID)) + len(times(c.ID))
	tick(t, s)
	if after := len(times(a.ID)) + len(times(c.ID)); after != before {
		t.Fatalf("a tick before Interval passed created %d runs beyond the first minute", after-before)
	}
	clock = clock.Add(time.Millisecond)
	tick(t, s)
	if after := len(times(a.ID)) + len(times(c.ID)); after-before != 7 {
		t.Fatalf("a tick beyond the first minute created %d runs, want RunsPerTick = 7", after-before)
	}

	// While a task run waits for a worker, nothing beyond the first minute.
	due, err := b.svc.RunCreate(t.Context(), commands.RunCreateParams{Flow: domain.FlowSpec{Name: "waiting", Tasks: []domain.TaskSpec{{Name: "t", Command: []string{"true"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	before = len(times(a.ID)) + len(times(c.ID))
	clock = clock.Add(time.Millisecond)
	tick(t, s)
	if after := len(times(a.ID)) + len(times(c.ID)); after != before {
		t.Fatalf("a tick created %d runs beyond the first minute while run %s waited for a worker", after-before, due.ID)
	}
	b.validate(t)
}
