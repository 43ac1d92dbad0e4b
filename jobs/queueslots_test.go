package jobs_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
	"github.com/ordoflow/ordo/projections"
)

// concurrencyProbe counts the Go handler tasks running at once.
type concurrencyProbe struct {
	mu      sync.Mutex
	running int
	max     int
	marked  bool
	seen    []int // since mark: how many ran (itself included) as each task started
}

// handle returns a handler that is counted while it runs wait.
func (p *concurrencyProbe) handle(wait func(ctx context.Context) error) jobs.HandlerFunc {
	return func(ctx context.Context, _ jobs.TaskContext) (any, error) {
		p.mu.Lock()
		p.running++
		p.max = max(p.max, p.running)
		if p.marked {
			p.seen = append(p.seen, p.running)
		}
		p.mu.Unlock()
		defer func() {
			p.mu.Lock()
			p.running--
			p.mu.Unlock()
		}()
		return nil, wait(ctx)
	}
}

func (p *concurrencyProbe) now() (running, most int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running, p.max
}

// mark starts recording what each task that starts from now on sees.
func (p *concurrencyProbe) mark() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.marked = true
}

func (p *concurrencyProbe) since() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.seen...)
}

// gate is a handler body that returns once it takes a token from g.
func gate(g chan struct{}) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		select {
		case <-g:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// feed gives n tokens to g, one to each task that asks, until the test ends.
func feed(t *testing.T, g chan struct{}, n int) {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for range n {
			select {
			case g <- struct{}{}:
			case <-done:
				return
			}
		}
	}()
}

// setQueueLimit saves a work queue's concurrency limit as the API does; 0
// means none.
func (b testBundle) setQueueLimit(t *testing.T, queue string, limit int) {
	t.Helper()
	s := projections.WorkQueueSettings{Name: queue}
	if limit > 0 {
		s.ConcurrencyLimit = &limit
	}
	if _, err := projections.NewReader(b.store).WorkQueueSave(t.Context(), s); err != nil {
		t.Fatal(err)
	}
}

// createOn creates a run of flow due now on queue.
func (b testBundle) createOn(t *testing.T, queue string, flow domain.FlowSpec) domain.FlowRun {
	t.Helper()
	fr, err := b.svc.RunCreate(t.Context(), commands.RunCreateParams{DeploymentName: "test", WorkQueue: queue, Flow: flow, Actor: "token:test"})
	if err != nil {
		t.Fatal(err)
	}
	return fr
}

// handlerFlow is a flow of n independent tasks of one Go handler.
func handlerFlow(handler string, n int) domain.FlowSpec {
	f := domain.FlowSpec{Name: handler}
	for i := range n {
		f.Tasks = append(f.Tasks, domain.TaskSpec{Name: fmt.Sprintf("t%02d", i), Handler: handler})
	}
	return f
}

func (b testBundle) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// noSlotsLeft checks that no slot row is left, and validates the log.
func (b testBundle) noSlotsLeft(t *testing.T) {
	t.Helper()
	if n := b.count(t, `SELECT count(*) FROM work_queue_slots`); n != 0 {
		t.Errorf("%d slot rows left", n)
	}
	b.validate(t)
}

// waitingFor counts the task runs that wait for a slot of queue.
func (b testBundle) waitingFor(t *testing.T, queue string) int {
	t.Helper()
	return b.count(t, `SELECT count(*) FROM work_queue_slots WHERE queue = $1 AND state = 'waiting'`, queue)
}

// TestQueueConcurrencyLimitHoldsAcrossWorkers: three workers of four slots
// each run a queue limited to 2 at most two at a time, and every task runs
// once, with no failed or extra attempt; waiting tasks start when a slot
// frees, not by polling. A queue without a limit, worked by the same workers
// at the same time, runs all its tasks at once.
func TestQueueConcurrencyLimitHoldsAcrossWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.setQueueLimit(t, "limited", 2)
	const freeTasks = 8
	limited, free := &concurrencyProbe{}, &concurrencyProbe{}
	handlers := &jobs.Handlers{}
	handlers.Handle("limited", limited.handle(func(ctx context.Context) error {
		select {
		case <-time.After(150 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}))
	handlers.Handle("free", free.handle(func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		for {
			if _, most := free.now(); most >= freeTasks {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("not every task of the queue without a limit ran at once: %w", ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}))
	// Finished jobs are deleted: a trigger keeps what they were.
	if _, err := b.pool.Exec(t.Context(), `
CREATE TABLE finished_jobs (id bigint, queue text, state text, attempt int);
CREATE FUNCTION keep_finished_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO finished_jobs VALUES (OLD.id, OLD.queue, OLD.state, OLD.attempt);
    RETURN OLD;
END $$;
CREATE TRIGGER keep_finished_job BEFORE DELETE ON river_job FOR EACH ROW EXECUTE FUNCTION keep_finished_job();`); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		opts := jobs.WorkerOptions{Name: fmt.Sprintf("w%d", i), Queues: []string{"limited", "free"}, Concurrency: 4, Handlers: handlers}
		// A waiting task would look again only after 10 minutes: the run
		// completes in time only if freed slots wake them.
		jobs.SetSlotRecheck(&opts, 10*time.Minute)
		b.startWorker(t, opts)
	}
	lr := b.createOn(t, "limited", handlerFlow("limited", 12))
	fr := b.createOn(t, "free", handlerFlow("free", freeTasks))

	if lr = b.wait(t, lr.ID); lr.State.Type != domain.Completed {
		t.Fatalf("run on the limited queue ended %s (%s), want COMPLETED", lr.State.Type, lr.State.Message)
	}
	if _, most := limited.now(); most != 2 {
		t.Errorf("at most %d tasks of the queue limited to 2 ran at once, want 2", most)
	}
	if fr = b.wait(t, fr.ID); fr.State.Type != domain.Completed {
		t.Fatalf("run on the queue without a limit ended %s (%s), want COMPLETED", fr.State.Type, fr.State.Message)
	}
	for name, h := range b.tasks(t, lr) {
		if len(h.events) != 3 || len(h.of("TaskRunStarted")) != 1 || len(h.of("TaskRunCompleted")) != 1 || h.run.Attempt != 1 {
			var types []string
			for _, e := range h.events {
				types = append(types, e.Type)
			}
			t.Errorf("task %s: events %v at attempt %d, want created, started and completed at attempt 1", name, types, h.run.Attempt)
		}
	}
	// A task that waited was handed to a new job each time: every job
	// finished while running its first River attempt, and none is left.
	if n := b.count(t, `SELECT count(*) FROM river_job`); n != 0 {
		t.Errorf("%d River jobs left", n)
	}
	if n := b.count(t, `SELECT count(*) FROM finished_jobs WHERE state <> 'running' OR attempt <> 1`); n != 0 {
		t.Errorf("%d jobs not finished at their first River attempt", n)
	}
	if n := b.count(t, `SELECT count(*) FROM finished_jobs WHERE queue = 'limited'`); n == 12 {
		t.Error("no task of the limited queue waited for a slot: the test tests nothing")
	}
	b.noSlotsLeft(t)
}

// TestQueueConcurrencyLimitSetOnBusyQueue: a limit set while more task runs
// than it allows are running holds at once: those running count against it.
func TestQueueConcurrencyLimitSetOnBusyQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startReaper(t, jobs.ReaperOptions{Interval: 100 * time.Millisecond, DeadAfter: time.Minute})
	p, g := &concurrencyProbe{}, make(chan struct{})
	handlers := &jobs.Handlers{}
	handlers.Handle("gated", p.handle(gate(g)))
	b.startWorker(t, jobs.WorkerOptions{Queues: []string{"busy"}, Concurrency: 4, Handlers: handlers})
	fr := b.createOn(t, "busy", handlerFlow("gated", 7))
	waitUntil(t, time.Minute, "4 tasks run", func() bool { n, _ := p.now(); return n == 4 })

	b.setQueueLimit(t, "busy", 2)
	p.mark()
	g <- struct{}{} // one ends: three run, more than the limit allows
	waitUntil(t, time.Minute, "the three tasks left wait", func() bool {
		return b.waitingFor(t, "busy") == 3 || len(p.since()) > 0
	})
	if seen := p.since(); len(seen) > 0 {
		t.Fatalf("a task started while 3 ran, over the limit of 2 set meanwhile: %v", seen)
	}
	feed(t, g, 6)
	if fr = b.wait(t, fr.ID); fr.State.Type != domain.Completed {
		t.Fatalf("run ended %s (%s), want COMPLETED", fr.State.Type, fr.State.Message)
	}
	seen := p.since()
	if len(seen) != 3 {
		t.Fatalf("%d tasks started after the limit was set, want the 3 left", len(seen))
	}
	for _, n := range seen {
		if n > 2 {
			t.Errorf("tasks started after the limit of 2 was set saw %v running", seen)
			break
		}
	}
	b.noSlotsLeft(t)
}

// TestQueueConcurrencyLimitChanged: raising a limit lets waiting task runs
// start at once; lowering it holds back new starts until fewer than the new
// limit run. The work queue shows its slots in use and its waiting task runs.
func TestQueueConcurrencyLimitChanged(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startReaper(t, jobs.ReaperOptions{Interval: 100 * time.Millisecond, DeadAfter: time.Minute})
	b.setQueueLimit(t, "grow", 1)
	p, g := &concurrencyProbe{}, make(chan struct{})
	handlers := &jobs.Handlers{}
	handlers.Handle("gated", p.handle(gate(g)))
	b.startWorker(t, jobs.WorkerOptions{Queues: []string{"grow"}, Concurrency: 8, Handlers: handlers})
	fr := b.createOn(t, "grow", handlerFlow("gated", 8))
	waitUntil(t, time.Minute, "one task runs, seven wait", func() bool { n, _ := p.now(); return n == 1 && b.waitingFor(t, "grow") == 7 })

	b.setQueueLimit(t, "grow", 3)
	waitUntil(t, time.Minute, "three tasks run", func() bool { n, _ := p.now(); return n == 3 })
	q, err := projections.NewReader(b.store).WorkQueueGet(t.Context(), "grow")
	if err != nil {
		t.Fatal(err)
	}
	if q.ConcurrencyLimit == nil || *q.ConcurrencyLimit != 3 || q.SlotsInUse == nil || *q.SlotsInUse != 3 || q.WaitingForSlot != 5 {
		t.Errorf("work queue shows limit %v, slots in use %v, %d waiting; want 3, 3, 5", q.ConcurrencyLimit, q.SlotsInUse, q.WaitingForSlot)
	}

	b.setQueueLimit(t, "grow", 1)
	p.mark()
	feed(t, g, 8)
	if fr = b.wait(t, fr.ID); fr.State.Type != domain.Completed {
		t.Fatalf("run ended %s (%s), want COMPLETED", fr.State.Type, fr.State.Message)
	}
	if _, most := p.now(); most != 3 {
		t.Errorf("at most %d tasks ran at once, want 3 (the raised limit)", most)
	}
	seen := p.since()
	if len(seen) != 5 {
		t.Fatalf("%d tasks started after the limit was lowered, want the 5 left", len(seen))
	}
	for _, n := range seen {
		if n != 1 {
			t.Errorf("tasks started after the limit was lowered to 1 saw %v running", seen)
			break
		}
	}
	b.noSlotsLeft(t)
}

// TestQueueSlotOfKilledWorkerIsFreed: a worker SIGKILLed while its task
// holds the only slot of a queue does not keep it: once the worker is
// declared dead the slot is freed, and the queue's other task and the
// killed task's retry run on another worker.
func TestQueueSlotOfKilledWorkerIsFreed(t *testing.T) {
	t.Parallel()
	b, url := setupURL(t)
	b.setQueueLimit(t, "solo", 1)
	doomed := b.startWorkerProcess(t, url, "doomed", "solo")
	hog := sh("hog", `echo $$ > "$ORDO_WORKSPACE/hog-$ORDO_ATTEMPT.pid"
if [ "$ORDO_ATTEMPT" = 1 ]; then exec sleep 600; fi`)
	hog.Retries = 1
	fr := b.createOn(t, "solo", domain.FlowSpec{Name: "solo", Tasks: []domain.TaskSpec{hog, sh("other", "true")}})
	pid := readPid(t, filepath.Join(b.workspace, fr.ID.String(), "hog-1.pid"))

	doomed.signal(t, syscall.SIGKILL)
	doomed.wait(t)
	waitGone(t, pid, 2*time.Second, "the task of the killed worker")
	b.startReaper(t, jobs.ReaperOptions{Interval: testReaper.Interval, DeadAfter: testReaper.DeadAfter, Logger: testLogger(t)})
	rescuer := b.startWorker(t, jobs.WorkerOptions{Name: "rescuer", Queues: []string{"solo"}, HeartbeatInterval: 100 * time.Millisecond})
	if fr = b.wait(t, fr.ID); fr.State.Type != domain.Completed {
		t.Fatalf("run ended %s (%s), want COMPLETED", fr.State.Type, fr.State.Message)
	}
	starts := b.tasks(t, fr)["hog"].of("TaskRunStarted")
	if len(starts) != 2 || starts[1].Event.(domain.TaskRunStarted).Worker != rescuer.Name() {
		t.Errorf("hog started %d times, want twice, the second on the rescuer", len(starts))
	}
	b.noSlotsLeft(t)
}

// TestQueueSlotPassesOn: a slot freed goes to the oldest waiting task run
// at once; one granted to a task run that then needs no run (its result was
// cached meanwhile) goes on to the next, past a waiting run that was
// cancelled. A reaper pass removes what the cancelled run left.
func TestQueueSlotPassesOn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.setQueueLimit(t, "one", 1)
	g := make(chan struct{})
	handlers := &jobs.Handlers{}
	handlers.Handle("gated", func(ctx context.Context, _ jobs.TaskContext) (any, error) { return "result", gate(g)(ctx) })
	handlers.Handle("quick", func(context.Context, jobs.TaskContext) (any, error) { return nil, nil })
	opts := jobs.WorkerOptions{Queues: []string{"one"}, Concurrency: 4, Handlers: handlers}
	jobs.SetSlotRecheck(&opts, 10*time.Minute) // only a freed slot wakes a waiting task run
	b.startWorker(t, opts)

	cachedFlow := domain.FlowSpec{Name: "cached", Tasks: []domain.TaskSpec{{
		Name: "c", Handler: "gated", Cache: &domain.CachePolicy{Key: domain.CacheKeyInputs, ExpirationSeconds: 3600},
	}}}
	quickFlow := domain.FlowSpec{Name: "quick", Tasks: []domain.TaskSpec{{Name: "q", Handler: "quick"}}}
	first := b.createOn(t, "one", cachedFlow)
	waitUntil(t, time.Minute, "the first run's task starts", func() bool {
		return len(b.taskEvents(t, first, "c").of("TaskRunStarted")) == 1
	})
	var runs []domain.FlowRun
	for _, f := range []domain.FlowSpec{cachedFlow, quickFlow, quickFlow} {
		runs = append(runs, b.createOn(t, "one", f))
		waitUntil(t, time.Minute, "the new run waits", func() bool { return b.waitingFor(t, "one") == len(runs) })
	}
	second, cancelled, last := runs[0], runs[1], runs[2]
	if _, err := b.svc.RunCancel(t.Context(), cancelled.ID, "test"); err != nil {
		t.Fatal(err)
	}
	g <- struct{}{}

	if second = b.wait(t, second.ID); second.State.Type != domain.Completed || b.taskEvents(t, second, "c").run.State.Name != domain.NameCached {
		t.Errorf("second run ended %s, its task %s; want COMPLETED from the cache", second.State.Type, b.taskEvents(t, second, "c").run.State.Name)
	}
	if last = b.wait(t, last.ID); last.State.Type != domain.Completed {
		t.Errorf("last run ended %s (%s), want COMPLETED", last.State.Type, last.State.Message)
	}
	if cancelled = b.wait(t, cancelled.ID); cancelled.State.Type != domain.Cancelled {
		t.Errorf("cancelled run ended %s, want CANCELLED", cancelled.State.Type)
	}
	r, err := jobs.NewReaper(b.pool, b.store, jobs.ReaperOptions{Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reap(t.Context()); err != nil {
		t.Fatal(err)
	}
	b.noSlotsLeft(t)
}

// TestQueueSlotOfCancelledRunPassesOn: cancelling a run whose task was
// granted a slot but not yet picked up by a worker passes the slot on to the
// next waiting task run at once, not at the reaper's next pass.
func TestQueueSlotOfCancelledRunPassesOn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.setQueueLimit(t, "one", 1)
	handlers := &jobs.Handlers{}
	handlers.Handle("blocked", func(ctx context.Context, _ jobs.TaskContext) (any, error) {
		<-ctx.Done() // until its worker stops
		return nil, ctx.Err()
	})
	handlers.Handle("quick", func(context.Context, jobs.TaskContext) (any, error) { return nil, nil })
	opts := jobs.WorkerOptions{Queues: []string{"one"}, Concurrency: 4, Handlers: handlers, WorkspaceDir: b.workspace,
		KillGrace: time.Second, Logger: quietLogger}
	jobs.SetSlotRecheck(&opts, 10*time.Minute) // only a freed slot wakes a waiting task run
	first, err := jobs.NewWorker(b.pool, b.store, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(t.Context()); err != nil {
		t.Fatal(err)
	}

	blocked := b.createOn(t, "one", domain.FlowSpec{Name: "blocked", Tasks: []domain.TaskSpec{{Name: "b", Handler: "blocked"}}})
	waitUntil(t, time.Minute, "the blocked task starts", func() bool {
		return len(b.taskEvents(t, blocked, "b").of("TaskRunStarted")) == 1
	})
	quick := domain.FlowSpec{Name: "quick", Tasks: []domain.TaskSpec{{Name: "q", Handler: "quick"}}}
	doomed := b.createOn(t, "one", quick)
	waitUntil(t, time.Minute, "the second run waits", func() bool { return b.waitingFor(t, "one") == 1 })
	last := b.createOn(t, "one", quick)
	waitUntil(t, time.Minute, "the third run waits", func() bool { return b.waitingFor(t, "one") == 2 })

	// The worker stops: it takes no more jobs, then its stop deadline
	// passes and the blocked task is stopped. That attempt's end grants its
	// slot to the second run, whose job no worker is left to take.
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := first.Stop(ctx); err == nil {
		t.Fatal("the worker stopped although its task blocks until stopped")
	}
	if n := b.count(t, `
SELECT count(*) FROM work_queue_slots s JOIN river_job j ON j.id = s.job_id
WHERE s.state = 'granted' AND j.state = 'available' AND j.args ->> 'flow_run_id' = $1`, doomed.ID.String()); n != 1 {
		t.Fatalf("the second run's task holds %d granted slots, want 1", n)
	}

	if _, err := b.svc.RunCancel(t.Context(), doomed.ID, "test"); err != nil {
		t.Fatal(err)
	}
	b.startWorker(t, opts)
	if last = b.wait(t, last.ID); last.State.Type != domain.Completed {
		t.Errorf("last run ended %s (%s), want COMPLETED", last.State.Type, last.State.Message)
	}
	if doomed = b.wait(t, doomed.ID); doomed.State.Type != domain.Cancelled {
		t.Errorf("cancelled run ended %s, want CANCELLED", doomed.State.Type)
	}
	// The blocked task's attempt that its worker's stop interrupted was
	// queued again; it ends with its run.
	if _, err := b.svc.RunCancel(t.Context(), blocked.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if blocked = b.wait(t, blocked.ID); blocked.State.Type != domain.Cancelled {
		t.Errorf("blocked run ended %s, want CANCELLED", blocked.State.Type)
	}
	// A worker may have fetched the requeued attempt's job as the run was
	// cancelled; its start then finds the task cancelled and frees the slot.
	waitUntil(t, time.Minute, "every slot is freed", func() bool {
		return b.count(t, `SELECT count(*) FROM work_queue_slots`) == 0
	})
	b.noSlotsLeft(t)
}

// TestQueueConcurrencyLimitRemoved: once a queue's limit is removed, the
// next reaper pass lets every task run that waited start.
func TestQueueConcurrencyLimitRemoved(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.setQueueLimit(t, "lifted", 1)
	p, g := &concurrencyProbe{}, make(chan struct{})
	handlers := &jobs.Handlers{}
	handlers.Handle("gated", p.handle(gate(g)))
	opts := jobs.WorkerOptions{Queues: []string{"lifted"}, Concurrency: 4, Handlers: handlers}
	jobs.SetSlotRecheck(&opts, 10*time.Minute)
	b.startWorker(t, opts)
	fr := b.createOn(t, "lifted", handlerFlow("gated", 3))
	waitUntil(t, time.Minute, "one task runs, two wait", func() bool { n, _ := p.now(); return n == 1 && b.waitingFor(t, "lifted") == 2 })

	b.setQueueLimit(t, "lifted", 0)
	r, err := jobs.NewReaper(b.pool, b.store, jobs.ReaperOptions{Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reap(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Minute, "three tasks run", func() bool { n, _ := p.now(); return n == 3 })
	feed(t, g, 3)
	if fr = b.wait(t, fr.ID); fr.State.Type != domain.Completed {
		t.Fatalf("run ended %s (%s), want COMPLETED", fr.State.Type, fr.State.Message)
	}
	b.noSlotsLeft(t)
}

// TestQueueLimitSaveAndStartsExclude: saving a queue's limit waits for the
// transactions recording starts on that queue, and starts wait for the
// save, so that no attempt starts uncounted against a limit saved at the
// same moment.
func TestQueueLimitSaveAndStartsExclude(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	p, g := &concurrencyProbe{}, make(chan struct{})
	handlers := &jobs.Handlers{}
	handlers.Handle("gated", p.handle(gate(g)))
	b.startWorker(t, jobs.WorkerOptions{Queues: []string{"q"}, Concurrency: 4, Handlers: handlers})

	// A save in progress holds back the starts of the queue ...
	save, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer save.Rollback(context.WithoutCancel(ctx))
	if _, err := save.Exec(ctx, `SELECT lock_work_queue_for_save('q')`); err != nil {
		t.Fatal(err)
	}
	fr := b.createOn(t, "q", handlerFlow("gated", 1))
	waitUntil(t, time.Minute, "the worker's start waits for the save's lock", b.waitsForAdvisoryLock(t))
	if n, _ := p.now(); n != 0 {
		t.Fatal("a task started while a save of its queue's settings was in progress")
	}
	if err := save.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Minute, "the task starts once the save committed", func() bool { n, _ := p.now(); return n == 1 })

	// ... and a transaction recording starts holds back a save.
	starts, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer starts.Rollback(context.WithoutCancel(ctx))
	if _, err := starts.Exec(ctx, `SELECT lock_work_queues_for_starts('{q}')`); err != nil {
		t.Fatal(err)
	}
	saved := make(chan struct{})
	go func() {
		defer close(saved)
		b.setQueueLimit(t, "q", 1)
	}()
	waitUntil(t, time.Minute, "the save waits for the starts' lock", b.waitsForAdvisoryLock(t))
	select {
	case <-saved:
		t.Fatal("a limit was saved while starts on its queue were being recorded")
	default:
	}
	if err := starts.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-saved:
	case <-time.After(10 * time.Second):
		t.Fatal("the save did not go through once the starts committed")
	}
	// The task that started before the limit counts against it.
	var used int
	if err := b.pool.QueryRow(ctx, `SELECT slots_in_use FROM work_queue_concurrency WHERE queue = 'q'`).Scan(&used); err != nil || used != 1 {
		t.Fatalf("slots in use after the limit was saved: %d (%v), want 1", used, err)
	}
	feed(t, g, 1)
	if fr = b.wait(t, fr.ID); fr.State.Type != domain.Completed {
		t.Fatalf("run ended %s (%s), want COMPLETED", fr.State.Type, fr.State.Message)
	}
	b.noSlotsLeft(t)
}

// waitsForAdvisoryLock reports whether a transaction waits for an advisory
// lock: a writer blocked by the queue locks of migration 0013.
func (b testBundle) waitsForAdvisoryLock(t *testing.T) func() bool {
	return func() bool {
		return b.count(t, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`) > 0
	}
}

// TestQueueSlotsServeEarlierRunsFirst: on a queue limited to 1, runs of two
// chained tasks arrive while the slot is taken, and waiting attempts look
// again by themselves all the time. No attempt takes a slot (a grant, or a
// start that finds one free) while an attempt of a run due earlier, or of
// the same run that asked earlier, waits: so a run's second task does not
// queue behind the first tasks of the runs created after it. What the
// design allows: a slot goes to an attempt that waits when it frees, and an
// attempt that asks later (the second task, queued by the outcome that
// freed the slot) waits for that one.
func TestQueueSlotsServeEarlierRunsFirst(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.setQueueLimit(t, "fifo", 1)
	const runs = 6
	// Every take of a slot is checked against the attempts then waiting,
	// by their runs' order (slot_order, filled as the runs are created).
	if _, err := b.pool.Exec(t.Context(), `
CREATE TABLE slot_order (task_run_id uuid PRIMARY KEY, run int NOT NULL, label text NOT NULL);
CREATE TABLE slot_jumps (taker text, ahead text);
CREATE FUNCTION check_slot_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IN ('granted', 'held') AND (TG_OP = 'INSERT' OR OLD.state = 'waiting') THEN
        INSERT INTO slot_jumps
        SELECT n.label, o.label
        FROM work_queue_slots w
        JOIN slot_order o ON o.task_run_id = w.task_run_id
        JOIN slot_order n ON n.task_run_id = NEW.task_run_id
        WHERE w.queue = NEW.queue AND w.state = 'waiting' AND (o.run, w.created_at) < (n.run, NEW.created_at);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER check_slot_order AFTER INSERT OR UPDATE ON work_queue_slots FOR EACH ROW EXECUTE FUNCTION check_slot_order();`); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		started []string
		labels  = map[uuid.UUID]string{}
	)
	g := make(chan struct{})
	handlers := &jobs.Handlers{}
	handlers.Handle("gated", func(ctx context.Context, tc jobs.TaskContext) (any, error) {
		mu.Lock()
		started = append(started, labels[tc.TaskRunID])
		mu.Unlock()
		return nil, gate(g)(ctx)
	})
	for i := range 2 {
		opts := jobs.WorkerOptions{Name: fmt.Sprintf("w%d", i), Queues: []string{"fifo"}, Concurrency: 4, Handlers: handlers}
		jobs.SetSlotRecheck(&opts, 100*time.Millisecond) // waiting attempts are often being looked at again
		b.startWorker(t, opts)
	}
	chain := domain.FlowSpec{Name: "chain", Tasks: []domain.TaskSpec{{Name: "a", Handler: "gated"}, {Name: "b", Handler: "gated", DependsOn: []string{"a"}}}}
	var created []domain.FlowRun
	for i := range runs {
		fr := b.createOn(t, "fifo", chain)
		created = append(created, fr)
		mu.Lock()
		for name, id := range fr.TaskRunIDs {
			label := fmt.Sprintf("run %d task %s", i+1, name)
			labels[id] = label
			if _, err := b.pool.Exec(t.Context(), `INSERT INTO slot_order VALUES ($1, $2, $3)`, id, i+1, label); err != nil {
				t.Fatal(err)
			}
		}
		mu.Unlock()
		if i == 0 {
			waitUntil(t, time.Minute, "the first run's task starts", func() bool { mu.Lock(); defer mu.Unlock(); return len(started) == 1 })
		}
	}
	waitUntil(t, time.Minute, "the later runs' first tasks wait", func() bool { return b.waitingFor(t, "fifo") == runs-1 })
	feed(t, g, 2*runs)
	for _, fr := range created {
		if fr = b.wait(t, fr.ID); fr.State.Type != domain.Completed {
			t.Fatalf("run ended %s (%s), want COMPLETED", fr.State.Type, fr.State.Message)
		}
	}
	rows, err := b.pool.Query(t.Context(), `SELECT taker, ahead FROM slot_jumps`)
	if err != nil {
		t.Fatal(err)
	}
	var jumps []string
	var taker, ahead string
	if _, err := pgx.ForEachRow(rows, []any{&taker, &ahead}, func() error {
		jumps = append(jumps, taker+" took a slot while "+ahead+" waited")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(jumps) > 0 {
		mu.Lock()
		t.Errorf("slots went to attempts behind others that waited:\n  %s\nstarts in order: %s", strings.Join(jumps, "\n  "), strings.Join(started, ", "))
		mu.Unlock()
	}
	b.noSlotsLeft(t)
}
