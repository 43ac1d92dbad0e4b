package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/groupcommit"
	"github.com/ordoflow/ordo/riverjob"
)

// WorkerOptions configure a Worker. The zero value of each field means its
// default.
type WorkerOptions struct {
	// Queues are the work queues the worker takes task runs from. Required.
	Queues []string
	// Concurrency is how many task runs the worker runs at once on each of
	// its queues. Defaults to 10. A slot takes the next task run as soon as
	// a task's handler or process ended, while its outcome is recorded; at
	// most Concurrency outcomes per queue wait to be recorded.
	Concurrency int
	// Handlers are the Go handler tasks this worker can run. Optional.
	Handlers *Handlers
	// Name identifies the worker in events and in the workers table.
	// Defaults to hostname-pid.
	Name string

	// FetchCooldown is the shortest time between two fetches of jobs from
	// one queue: River's default (100ms) caps a queue near 1,000 jobs/s and
	// adds up to that much to every step. Defaults to 2ms (measured: in a
	// chain of no-op tasks, 5ms adds about 1.3ms to the median step, since
	// the previous fetch is usually less than 5ms old).
	FetchCooldown time.Duration
	// FetchPollInterval is how often a queue is polled when no insert
	// notification arrives. Defaults to 200ms.
	FetchPollInterval time.Duration

	// WorkspaceDir is where each flow run gets its ORDO_WORKSPACE directory.
	// Defaults to $TMPDIR/ordo/workspaces.
	WorkspaceDir string
	// WorkspaceRetention is how long a flow run's workspace is kept on this
	// worker after the run ended; the worker then removes it (a run
	// retried later starts with an empty one). Negative keeps workspaces
	// for ever. Defaults to DefaultWorkspaceRetention (24h).
	WorkspaceRetention time.Duration
	// Env is the worker environment that tasks may inherit from (basic
	// variables and those named in inherit_env). Defaults to os.Environ().
	Env []string
	// Python is the interpreter that runs command tasks whose argv[0] is
	// python3 or python (see ResolvePython); empty: they are looked up on
	// the worker's PATH like any command.
	Python string
	// DisableWarmPython runs every Python task (`python3 -m ordo run FILE
	// ...`) in an interpreter of its own. Left on, an attempt is forked
	// from a warm interpreter that imported FILE once (see doc.go).
	DisableWarmPython bool
	// MaxLogBytes is how much output (stdout, stderr, a handler's logs) one
	// task attempt may store; past it the task runs on, its output is
	// dropped, and one last line says how much. Defaults to
	// DefaultMaxLogBytes (10 MiB); negative means no cap.
	MaxLogBytes int64
	// KillGrace is how long a timed-out task's process group has between
	// SIGTERM and SIGKILL (and a Go handler to return after its context
	// ends). Defaults to 5s.
	KillGrace time.Duration
	// HeartbeatInterval is how often the worker records that it is alive.
	// Defaults to 5s.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how long the worker may go without recording a
	// heartbeat (no primary reachable) before it starts no new attempts,
	// since the reapers may then declare it dead; it starts them again once
	// a heartbeat is recorded. Match the reapers' DeadAfter. Defaults to
	// 15s.
	HeartbeatTimeout time.Duration
	// MaxBatch is the most task starts or outcomes committed in one
	// transaction. Defaults to 500.
	MaxBatch int
	// DisableDueTimer turns off the worker's DueTimer, when another process
	// runs one. Leave it on: without one, retry delays and scheduled runs
	// wait for River's 5 s scheduler.
	DisableDueTimer bool
	// RescueStuckJobsAfter is when River takes a running job for lost and
	// works it again (the worker then records the lost attempt as crashed).
	// It must exceed the longest task timeout. Defaults to 8 days.
	RescueStuckJobsAfter time.Duration
	// CancelCheckInterval is how often the worker looks for cancelled flow
	// runs among those it runs attempts of, besides listening for
	// cancellations: how long a lost notification can delay a stop.
	// Defaults to 2s.
	CancelCheckInterval time.Duration
	// CommitRetryTimeout is how long the worker keeps trying to record a
	// start or an outcome while the database is unreachable (a restart, a
	// failover) before giving the job back to River. Defaults to 2m.
	CommitRetryTimeout time.Duration
	// Logger receives the worker's own logs. Defaults to slog.Default().
	Logger *slog.Logger

	// BlobStore is where the outputs of task attempts are stored and their
	// input files fetched from (the store of ORDO_BLOB_STORE; the worker
	// does not close it). Nil: an attempt that leaves outputs or has input
	// files fails, saying the worker has no blob store.
	BlobStore blobstore.Store
	// BlobCacheDir is where the worker keeps the input blobs it fetched,
	// each once, to hard link into attempts' ORDO_INPUT_DIR: on the file
	// system of WorkspaceDir, or inputs are copied. Defaults to
	// WorkspaceDir/.blobs.
	BlobCacheDir string
	// BlobCacheBytes is how much BlobCacheDir keeps before the least
	// recently used blobs that no attempt uses are removed. Defaults to
	// DefaultBlobCacheBytes (10 GiB).
	BlobCacheBytes int64
	// MaxOutputBytes caps one output, and MaxAttemptOutputBytes all the
	// outputs of one attempt: past either the attempt fails. Default to
	// DefaultMaxOutputBytes (5 GiB) and DefaultMaxAttemptOutputBytes
	// (20 GiB).
	MaxOutputBytes        int64
	MaxAttemptOutputBytes int64

	noCancelListen bool          // tests: rely on CancelCheckInterval alone
	slotRecheck    time.Duration // tests: how long an attempt waits for a slot before looking again
	workspaceSweep time.Duration // tests: how often ended runs' workspaces are looked for
}

func (o *WorkerOptions) validate() error {
	p := &domain.Problems{Message: "invalid worker options"}
	if len(o.Queues) == 0 {
		p.Add("Queues", "a worker needs at least one queue")
	}
	for _, q := range o.Queues {
		if !domain.ValidName(q) {
			p.Add("Queues", "%q is not a valid queue name", q)
		}
	}
	if o.Concurrency < 0 {
		p.Add("Concurrency", "must not be negative")
	}
	if o.FetchCooldown < 0 || o.FetchPollInterval < 0 {
		p.Add("FetchCooldown", "fetch durations must not be negative")
	}
	if o.FetchCooldown > 0 && o.FetchPollInterval > 0 && o.FetchPollInterval < o.FetchCooldown {
		p.Add("FetchPollInterval", "must not be shorter than FetchCooldown")
	}
	if o.BlobCacheBytes < 0 {
		p.Add("BlobCacheBytes", "must not be negative")
	}
	if o.MaxOutputBytes < 0 || o.MaxAttemptOutputBytes < 0 {
		p.Add("MaxOutputBytes", "output caps must not be negative")
	}
	return p.Err()
}

func (o *WorkerOptions) setDefaults() {
	if o.Concurrency == 0 {
		o.Concurrency = 10
	}
	if o.Name == "" {
		host, _ := os.Hostname()
		o.Name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if o.FetchCooldown == 0 {
		o.FetchCooldown = 2 * time.Millisecond
	}
	if o.FetchPollInterval == 0 {
		o.FetchPollInterval = max(200*time.Millisecond, o.FetchCooldown)
	}
	if o.WorkspaceDir == "" {
		o.WorkspaceDir = filepath.Join(os.TempDir(), "ordo", "workspaces")
	}
	if o.Env == nil {
		o.Env = os.Environ()
	}
	if o.WorkspaceRetention == 0 {
		o.WorkspaceRetention = DefaultWorkspaceRetention
	}
	if o.KillGrace == 0 {
		o.KillGrace = 5 * time.Second
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = 5 * time.Second
	}
	if o.HeartbeatTimeout == 0 {
		o.HeartbeatTimeout = 15 * time.Second
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 500
	}
	if o.RescueStuckJobsAfter == 0 {
		o.RescueStuckJobsAfter = 8 * 24 * time.Hour
	}
	if o.CancelCheckInterval == 0 {
		o.CancelCheckInterval = 2 * time.Second
	}
	if o.CommitRetryTimeout == 0 {
		o.CommitRetryTimeout = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.BlobCacheDir == "" {
		o.BlobCacheDir = filepath.Join(o.WorkspaceDir, ".blobs")
	}
	if o.BlobCacheBytes == 0 {
		o.BlobCacheBytes = DefaultBlobCacheBytes
	}
	if o.MaxOutputBytes == 0 {
		o.MaxOutputBytes = DefaultMaxOutputBytes
	}
	if o.MaxAttemptOutputBytes == 0 {
		o.MaxAttemptOutputBytes = DefaultMaxAttemptOutputBytes
	}
}

// Worker works task runs from its queues: a River client on those queues,
// the group committers that record starts and outcomes, the log writer, a
// heartbeat, a DueTimer, and the removal of ended runs' workspaces.
type Worker struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
	opts  WorkerOptions
	id    uuid.UUID

	client     *river.Client[pgx.Tx]
	attempts   *commands.Attempts
	wake       *waker
	running    *attempts
	wsMu       sync.Mutex
	workspaces map[uuid.UUID]bool // flow runs whose workspace this worker created
	logs       *logWriter
	due        *DueTimer
	// recording bounds, per queue, the outcomes handed to the outcome
	// committer after their job returned to River (see recordOutcome);
	// recorders counts those not yet recorded.
	recording map[string]chan struct{}
	recorders sync.WaitGroup
	stopping  chan struct{} // closed when Stop begins
	stopOnce  sync.Once
	starts    *groupcommit.Committer[*commands.Op]
	finishes  *groupcommit.Committer[*commands.Op]
	deleted   *deletedJobs      // jobs the worker's commits deleted, left out of River's completions
	cutOff    *cutOff           // set while no heartbeat was recorded for HeartbeatTimeout
	held      *heldJobs         // jobs in Work or whose outcome is being recorded
	cache     *blobCache        // input blobs on this worker's disk
	outDirs   *dirPool          // attempts' ORDO_OUTPUT_DIR
	inDirs    *dirPool          // attempts' ORDO_INPUT_DIR
	warm      *warmPool         // warm Python interpreters; nil when off
	env       map[string]string // opts.Env by name, which tasks inherit from
	sdkMu     sync.Mutex
	sdkDir    string // the extracted Python package, once extracted

	ctx    context.Context // lives until Stop has stopped River
	cancel context.CancelFunc
	bg     sync.WaitGroup
}

// NewWorker returns a worker; Start starts it.
func NewWorker(pool *pgxpool.Pool, store *eventstore.Store, opts WorkerOptions) (*Worker, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	w := &Worker{
		pool: pool, store: store, opts: opts, id: id,
		running: newAttempts(), workspaces: map[uuid.UUID]bool{},
		wake:      newWaker(pool, opts.Logger),
		logs:      newLogWriter(pool, opts.Logger, opts.MaxLogBytes),
		deleted:   &deletedJobs{},
		cutOff:    newCutOff(),
		held:      &heldJobs{n: map[int64]int{}},
		cache:     newBlobCache(opts.BlobCacheDir, opts.BlobCacheBytes, opts.BlobStore),
		recording: map[string]chan struct{}{},
		stopping:  make(chan struct{}),
		env:       envByName(opts.Env),
	}
	w.outDirs = newDirPool(filepath.Join(opts.WorkspaceDir, outputsDirName), id.String(), 0o700)
	w.inDirs = newDirPool(filepath.Join(opts.WorkspaceDir, inputsDirName), id.String(), 0o555)
	if !opts.DisableWarmPython {
		w.warm = newWarmPool(opts.Logger)
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.starts = newCommitter(opts.MaxBatch, w.commitBatch)
	w.finishes = newCommitter(opts.MaxBatch, w.commitBatch)
	if !opts.DisableDueTimer {
		w.due = NewDueTimer(pool, DueTimerOptions{Logger: opts.Logger})
	}

	workers := river.NewWorkers()
	river.AddWorker(workers, &taskRunWorker{w: w})
	queues := make(map[string]river.QueueConfig, len(opts.Queues))
	for _, q := range opts.Queues {
		queues[q] = river.QueueConfig{MaxWorkers: opts.Concurrency}
		w.recording[q] = make(chan struct{}, opts.Concurrency)
	}
	w.client, err = river.NewClient[pgx.Tx](newWorkerDriver(pool, w.deleted), &river.Config{
		// The reaper finds the jobs of a dead worker by this id in
		// river_job.attempted_by.
		ID:                   id.String(),
		Queues:               queues,
		Workers:              workers,
		FetchCooldown:        opts.FetchCooldown,
		FetchPollInterval:    opts.FetchPollInterval,
		JobTimeout:           -1, // tasks have their own timeout_seconds
		RescueStuckJobsAfter: opts.RescueStuckJobsAfter,
		Logger:               opts.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("river client: %w", err)
	}
	w.attempts = commands.NewAttempts(store, RiverEnqueuer(w.client), commands.AttemptsOptions{
		Worker: opts.Name, WorkerID: id, Logger: opts.Logger, SlotRecheck: opts.slotRecheck,
	})
	return w, nil
}

// Name is the worker's name, as recorded in TaskRunStarted events.
func (w *Worker) Name() string { return w.opts.Name }

// Start registers the worker and starts working its queues.
func (w *Worker) Start(ctx context.Context) error {
	host, _ := os.Hostname()
	if _, err := w.pool.Exec(ctx, `
INSERT INTO workers (id, name, queues, hostname, pid) VALUES ($1, $2, $3, $4, $5)`,
		w.id, w.opts.Name, w.opts.Queues, host, os.Getpid()); err != nil {
		return fmt.Errorf("register worker: %w", err)
	}
	w.bg.Go(w.logs.run)
	w.bg.Go(w.heartbeat)
	w.bg.Go(w.watchCancellations)
	w.bg.Go(w.sweepWorkspaces)
	w.bg.Go(func() {
		if n, err := w.removeLeftDirs(w.ctx); err != nil && w.ctx.Err() == nil {
			w.opts.Logger.Warn("could not remove the attempt directories of stopped workers", "dir", w.opts.WorkspaceDir, "err", err)
		} else if n > 0 {
			w.opts.Logger.Info("removed the attempt directories of stopped workers", "dir", w.opts.WorkspaceDir, "removed", n)
		}
	})
	w.bg.Go(func() { w.wake.run(w.ctx) })
	if w.due != nil {
		w.bg.Go(func() { _ = w.due.Run(w.ctx) })
	}
	if err := w.client.Start(ctx); err != nil {
		w.cancel()
		w.logs.stop()
		w.bg.Wait()
		return fmt.Errorf("start river client: %w", err)
	}
	return nil
}

// Stop stops taking jobs, waits for running task runs to finish (or ctx to
// end, which kills them) and records that the worker stopped.
func (w *Worker) Stop(ctx context.Context) error {
	w.stopOnce.Do(func() { close(w.stopping) })
	err := w.client.Stop(ctx)
	if err != nil {
		// ctx ended: kill what still runs; its outcome is recorded as crashed
		cctx, cancel := context.WithTimeout(context.Background(), w.opts.KillGrace+5*time.Second)
		defer cancel()
		_ = w.client.StopAndCancel(cctx)
	}
	w.recorders.Wait()
	if w.warm != nil {
		w.warm.close()
	}
	w.outDirs.drain()
	w.inDirs.drain()
	w.starts.Wait()
	w.finishes.Wait()
	w.cancel()
	w.logs.stop()
	w.bg.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, e := w.pool.Exec(sctx, `UPDATE workers SET stopped_at = now() WHERE id = $1`, w.id); e != nil && err == nil {
		err = fmt.Errorf("record worker stop: %w", e)
	}
	return err
}

func (w *Worker) heartbeat() {
	t := time.NewTicker(w.opts.HeartbeatInterval)
	defer t.Stop()
	lastBeat := time.Now() // Start registered the worker
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(w.ctx, max(w.opts.HeartbeatInterval, 5*time.Second))
		var deadAt *time.Time
		err := w.pool.QueryRow(ctx, `
WITH before AS (SELECT dead_at FROM workers WHERE id = $1 FOR UPDATE)
UPDATE workers SET last_heartbeat_at = now(), dead_at = NULL
FROM before WHERE workers.id = $1
RETURNING before.dead_at`, w.id).Scan(&deadAt)
		cancel()
		if err == nil {
			lastBeat = time.Now()
			if w.cutOff.set(false) {
				w.opts.Logger.Info("a heartbeat was recorded again: starting new attempts again")
			}
			w.giveBackUnheld()
		} else if since := time.Since(lastBeat); since > w.opts.HeartbeatTimeout && w.ctx.Err() == nil && w.cutOff.set(true) {
			w.opts.Logger.Error("no heartbeat recorded for longer than the heartbeat timeout (no primary reachable): starting no new attempts until one is",
				"since", since.Round(time.Second).String(), "heartbeat_timeout", w.opts.HeartbeatTimeout.String())
		}
		switch {
		case err != nil && w.ctx.Err() == nil:
			w.opts.Logger.Warn("worker heartbeat", "err", err)
		case deadAt != nil:
			w.opts.Logger.Error("this worker was declared dead because its heartbeat stopped; "+
				"the attempts it was running were recorded as crashed and their results will be refused", "declared_dead_at", *deadAt)
		}
	}
}

// giveBackUnheld gives back the task run jobs running in this worker's name
// that it does not hold: their outcome was recorded and then lost, as the
// last transactions are when PostgreSQL fails over to an asynchronous
// standby. Nothing else would ever end them. The worker that takes one
// again records the lost attempt as crashed, and its retry policy applies.
// Jobs fetched within the last HeartbeatInterval are left alone: River may
// not have handed them to Work yet.
func (w *Worker) giveBackUnheld() {
	ctx, cancel := context.WithTimeout(w.ctx, max(w.opts.HeartbeatInterval, 5*time.Second))
	defer cancel()
	jobs, err := riverjob.RunningInWorker(ctx, w.pool, w.id.String(), w.opts.HeartbeatInterval)
	if err != nil {
		if w.ctx.Err() == nil {
			w.opts.Logger.Warn("look for task run jobs running in this worker's name", "err", err) // the next heartbeat looks again
		}
		return
	}
	for _, j := range jobs {
		if w.held.has(j.ID) {
			continue
		}
		if err := riverjob.GiveBack(ctx, w.pool, j.ID, j.Spent); err != nil {
			return
		}
		w.opts.Logger.Warn("a task run job was running in this worker's name without the worker holding it (its outcome was lost, as in a failover to an asynchronous standby): given back, the attempt will be recorded as crashed",
			"job_id", j.ID, "discarded", j.Spent)
	}
}

// heldJobs counts, by job, the holds of Work and of an outcome being
// recorded.
type heldJobs struct {
	mu sync.Mutex
	n  map[int64]int
}

func (h *heldJobs) add(id int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n[id]++
}

func (h *heldJobs) remove(id int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n[id]--; h.n[id] <= 0 {
		delete(h.n, id)
	}
}

func (h *heldJobs) has(id int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[id] > 0
}

// taskRunWorker is the River worker of ordo.task_run jobs.
type taskRunWorker struct {
	river.WorkerDefaults[riverjob.TaskRunArgs]
	w *Worker
}

// Work records the start of the attempt (committed before anything runs,
// so that a crash is visible), runs it, and hands its outcome to be
// recorded together with the job's completion and what follows from it
// (recordOutcome), without waiting for that commit.
func (t *taskRunWorker) Work(ctx context.Context, job *river.Job[riverjob.TaskRunArgs]) error {
	w := t.w
	w.held.add(job.ID)
	defer w.held.remove(job.ID)
	if job.Args.ChildFlowRunID != uuid.Nil {
		// A sub-flow run ended: settle the parent attempt.
		return w.commit(w.finishes, opOf(commands.OpFinish, job), "record the end of sub-flow run")
	}
	// Registered before the start commits, so that a cancellation that
	// commits right after it finds the attempt.
	actx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	w.running.add(job.Args.FlowRunID, job.ID, stop)
	defer w.running.remove(job.Args.FlowRunID, job.ID)

	if err := w.cutOff.wait(ctx); err != nil {
		return err
	}
	start := opOf(commands.OpStart, job)
	if err := w.commit(w.starts, start, "start task run"); err != nil {
		return err
	}
	var out commands.Outcome
	switch start.Result.Action {
	case commands.ActionSkip:
		w.opts.Logger.Debug("task run job skipped", "task_run_id", job.Args.TaskRunID, "attempt", job.Args.Attempt, "reason", start.Result.Reason)
		return nil
	case commands.ActionDone:
		w.opts.Logger.Debug("task run settled at start", "task_run_id", job.Args.TaskRunID, "attempt", job.Args.Attempt, "reason", start.Result.Reason)
		return nil
	case commands.ActionWait:
		// The start completed this job and handed the attempt to a new one:
		// River finds this one no longer running and leaves it so.
		w.opts.Logger.Debug("task run waits for a slot", "task_run_id", job.Args.TaskRunID, "attempt", job.Args.Attempt, "reason", start.Result.Reason)
		return nil
	case commands.ActionRecover:
		out = failed(job.Args.Attempt, "attempt %d was lost: the worker running it stopped before recording its outcome", job.Args.Attempt)
		out.Failure.Crashed = true
	case commands.ActionRun:
		p := start.Result.Plan
		log := &taskLog{w: w.logs, base: LogLine{TaskRunID: p.TaskRunID, FlowRunID: p.FlowRunID, Attempt: p.Attempt}}
		log.head("attempt %d of task %s started on worker %s", p.Attempt, p.Task.Name, w.opts.Name)
		out = w.execute(actx, p, log)
		out.CacheKey = p.CacheKey
		log.sync(ctx) // the lines the task wrote are stored before its outcome
	}
	w.recordOutcome(job, out, start.Result.Slot)
	return nil
}

// recordOutcome hands the attempt's outcome to the outcome committer and
// returns without waiting for the commit, so that the job's River slot
// takes the next task while the outcome commits: held through a second
// group commit, the slots ran half as many tasks at a time as they could.
// River's own completion of the job is left out (the transaction that
// records the outcome deletes the job). The outcomes waiting to commit are
// at most Concurrency per queue: past that, Work waits here, its slot held.
// The committer calls back when the outcome committed; only an outcome that
// failed takes a goroutine, to try again or give the job back.
func (w *Worker) recordOutcome(job *river.Job[riverjob.TaskRunArgs], out commands.Outcome, slot bool) {
	room := w.recording[job.Queue]
	if room != nil {
		room <- struct{}{}
	}
	w.deleted.add([]int64{job.ID})
	op := opOf(commands.OpFinish, job)
	op.Outcome = out
	op.Slot, op.Early = slot, true
	w.recorders.Add(1)
	w.held.add(job.ID)
	done := func() {
		if room != nil {
			<-room
		}
		w.held.remove(job.ID)
		w.recorders.Done()
	}
	const what = "record outcome of task run"
	began := time.Now()
	w.finishes.Submit(context.WithoutCancel(w.ctx), op, func(err error) {
		if err == nil {
			done()
			return
		}
		go func() { // the database refused the outcome or could not be reached
			defer done()
			if err := w.commitAgain(w.finishes, op, what, err, began); err != nil {
				w.opts.Logger.Error("outcome of task run not recorded; its job goes back to the queue, and the worker that takes it records the attempt as crashed",
					"task_run_id", job.Args.TaskRunID, "attempt", job.Args.Attempt, "err", err)
				w.giveBack(job)
			}
		}()
	})
}

// giveBack makes the job of an outcome that could not be recorded workable
// again, as River does with a job whose Work failed: the worker that takes
// it finds the attempt started and not ended, and records it as crashed.
// A job out of River attempts is discarded instead. It tries until the
// database takes it or the worker stops; a job still running then is
// recovered by the reaper, as that of a stopped worker.
func (w *Worker) giveBack(job *river.Job[riverjob.TaskRunArgs]) {
	discard := job.Attempt >= job.MaxAttempts
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := riverjob.GiveBack(ctx, w.pool, job.ID, discard)
		cancel()
		if err == nil {
			w.wake.kick(map[string]bool{job.Queue: true})
			return
		}
		w.opts.Logger.Warn("give back task run job; trying again", "job_id", job.ID, "err", err, "in", backoff)
		select {
		case <-w.stopping:
			w.opts.Logger.Error("task run job left running: the worker stopped", "job_id", job.ID)
			return
		case <-time.After(backoff):
		}
	}
}

// commit hands op to a committer and, while the database cannot be
// reached, tries again for up to CommitRetryTimeout. A later try knows that
// an earlier one may have committed.
func (w *Worker) commit(c *groupcommit.Committer[*commands.Op], op *commands.Op, what string) error {
	began := time.Now()
	// an outcome is always awaited: it may commit
	return w.commitAgain(c, op, what, c.Do(context.WithoutCancel(w.ctx), op), began)
}

// commitAgain is commit after a first try, begun at began, that ended in
// err.
func (w *Worker) commitAgain(c *groupcommit.Committer[*commands.Op], op *commands.Op, what string, err error, began time.Time) error {
	deadline := began.Add(w.opts.CommitRetryTimeout)
	backoff := 50 * time.Millisecond
	for {
		if err == nil {
			return nil
		}
		if !transient(err) || time.Now().After(deadline) || w.ctx.Err() != nil {
			return fmt.Errorf("%s %s: %w", what, op.Args.TaskRunID, err)
		}
		w.opts.Logger.Warn("database unavailable; trying again", "what", what, "task_run_id", op.Args.TaskRunID, "err", err, "in", backoff)
		op.Retried = true
		select {
		case <-w.ctx.Done():
			return fmt.Errorf("%s %s: %w", what, op.Args.TaskRunID, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
		err = c.Do(context.WithoutCancel(w.ctx), op)
	}
}

// opOf is the op that records a job's start or finish.
func opOf(kind commands.OpKind, job *river.Job[riverjob.TaskRunArgs]) *commands.Op {
	return &commands.Op{Kind: kind, JobID: job.ID, Queue: job.Queue, Args: job.Args, JobAttempt: job.Attempt}
}

// commitBatch records a batch of starts or outcomes in one transaction and,
// once it committed, does what follows: River's completions of the jobs it
// deleted are left out, the queues that got jobs are woken, and the due
// timer when jobs were queued for later.
func (w *Worker) commitBatch(ctx context.Context, ops []*commands.Op) error {
	c, err := w.attempts.CommitBatch(ctx, ops)
	if err != nil {
		return err
	}
	w.deleted.add(c.Deleted)
	w.wake.kick(c.Wake)
	if !c.DueAt.IsZero() && w.due != nil {
		w.due.WakeAt(c.DueAt)
	}
	return nil
}

// cutOff is set while the worker could not record a heartbeat for longer
// than its timeout: the reapers may declare it dead meanwhile, so it starts
// no attempt until a heartbeat is recorded again.
type cutOff struct {
	mu    sync.Mutex
	ready chan struct{} // closed while not cut off
}

func newCutOff() *cutOff {
	c := &cutOff{ready: make(chan struct{})}
	close(c.ready)
	return c
}

// set sets or clears the state and reports whether it changed.
func (c *cutOff) set(on bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.ready:
		if on {
			c.ready = make(chan struct{})
		}
		return on
	default:
		if !on {
			close(c.ready)
		}
		return !on
	}
}

// wait returns once the worker is not cut off, or with ctx's error.
func (c *cutOff) wait(ctx context.Context) error {
	c.mu.Lock()
	ready := c.ready
	c.mu.Unlock()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
