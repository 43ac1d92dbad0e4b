package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// Schemas that Replay builds in and moves the old tables to.
const (
	replaySchema = "ordo_replay"
	oldSchema    = "ordo_replay_old"
)

// pgerrLockNotAvailable is lock_not_available: lock_timeout ran out.
const pgerrLockNotAvailable = "55P03"

// replayLockKey is the advisory lock that lets one replay run at a time
// ("ordorply").
const replayLockKey int64 = 0x6f72646f72706c79

// ReplayOptions tune Replay. The zero value is usable.
type ReplayOptions struct {
	// Progress, when set, is called every ProgressInterval while the log is
	// loaded, and once at the start of each later phase.
	Progress func(ReplayProgress)
	// ProgressInterval defaults to 1s.
	ProgressInterval time.Duration
	// Verify compares the rebuilt tables with the live ones, row by row,
	// once both hold the same prefix of the log, and checks every event of
	// the log with the domain's validator. The report is in the result.
	Verify bool
	// DryRun builds (and verifies) the new tables and then throws them away:
	// the live tables stay.
	DryRun bool
	// Decoders is how many goroutines decode events. Defaults to GOMAXPROCS.
	Decoders int
	// LockTimeout bounds the wait for the locks of the swap (readers of the
	// live tables finishing their queries). Defaults to 10s.
	LockTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (o *ReplayOptions) validate() error {
	if o.ProgressInterval < 0 || o.LockTimeout < 0 || o.Decoders < 0 {
		return errors.New("replay options: ProgressInterval, LockTimeout and Decoders must not be negative")
	}
	if o.ProgressInterval == 0 {
		o.ProgressInterval = time.Second
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = 10 * time.Second
	}
	if o.Decoders == 0 {
		o.Decoders = runtime.GOMAXPROCS(0)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Replay phases, in order.
const (
	PhaseLoad    = "load"     // reading and folding the log, writing state_history
	PhaseIndex   = "index"    // writing the other tables, building indexes
	PhaseCatchUp = "catch-up" // applying what was appended meanwhile
	PhaseVerify  = "verify"   // comparing with the live tables
	PhaseSwap    = "swap"     // putting the new tables in place
	PhaseDone    = "done"
)

// ReplayProgress says how far a replay is.
type ReplayProgress struct {
	Phase     string
	Events    int64         // events applied so far
	Total     int64         // events in the log when the replay started (0 until counted)
	Elapsed   time.Duration // since the replay started
	Rate      float64       // events per second while loading
	Remaining time.Duration // estimated time left to load the log; 0 when unknown
}

func (p ReplayProgress) String() string {
	s := fmt.Sprintf("%s: %d", p.Phase, p.Events)
	if p.Total > 0 {
		s += fmt.Sprintf("/%d events (%.0f%%)", p.Total, 100*float64(p.Events)/float64(p.Total))
	} else {
		s += " events"
	}
	// No rate here: the summary at the end gives the one figure, over the
	// whole replay.
	s += fmt.Sprintf(", %s elapsed", p.Elapsed.Round(100*time.Millisecond))
	if p.Remaining > 0 {
		s += fmt.Sprintf(", about %s left", p.Remaining.Round(100*time.Millisecond))
	}
	return s
}

// ReplayResult says what a replay did.
type ReplayResult struct {
	Events     int64                 // events applied to the new tables
	Checkpoint eventstore.Checkpoint // where the new tables (and the checkpoint) stand
	Duration   time.Duration         // the whole replay
	Load       time.Duration         // reading and folding the log and writing state_history, before indexes and the other tables
	Swapped    bool                  // the new tables are live (false on a dry run)
	Verify     *VerifyReport         // set when ReplayOptions.Verify
}

// Rate is the replay rate, events per second, over the whole replay.
func (r ReplayResult) Rate() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Events) / r.Duration.Seconds()
}

// replayGCPercent is the garbage collector's target while Replay runs.
const replayGCPercent = 400

// Replay rebuilds every read model from the start of the log into fresh
// tables, while the live tables go on serving and the projector goes on
// applying new events to them; then, in one transaction, it applies the
// last events, puts the new tables in place of the old ones (views that
// use them follow), moves the checkpoint and drops the old tables.
//
// Loading does not go through the projector's batches: it folds each
// stream in memory with the domain's Apply and writes each final row once,
// with binary COPY into tables without indexes, which are built afterwards.
// It raises the process's garbage collection target (GOGC) to 400 while it
// runs, unless it was set higher.
func Replay(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store, opts ReplayOptions) (ReplayResult, error) {
	if err := opts.validate(); err != nil {
		return ReplayResult{}, err
	}
	lock, err := pool.Acquire(ctx)
	if err != nil {
		return ReplayResult{}, fmt.Errorf("replay: %w", err)
	}
	defer lock.Release()
	var locked bool
	if err := lock.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, replayLockKey).Scan(&locked); err != nil {
		return ReplayResult{}, fmt.Errorf("replay: take lock: %w", err)
	}
	if !locked {
		return ReplayResult{}, domain.Errorf(domain.CodeConflict, "another replay is running on this database")
	}
	defer func() {
		_, _ = lock.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, replayLockKey)
	}()

	// Loading allocates a stream of short-lived events and rows; with the
	// default target the collector took a third of the process's CPU. The
	// heap a replay keeps is the final rows, so a higher target costs little.
	if gc := debug.SetGCPercent(replayGCPercent); gc > replayGCPercent || gc < 0 {
		debug.SetGCPercent(gc)
	} else {
		defer debug.SetGCPercent(gc)
	}

	r := &replayer{pool: pool, store: store, opts: opts, start: time.Now()}
	if opts.Verify {
		r.validator = domain.NewLogValidator(store.Registry())
		r.report = &VerifyReport{}
	}
	res, err := r.run(ctx)
	if !res.Swapped {
		if _, e := pool.Exec(context.WithoutCancel(ctx), `DROP SCHEMA IF EXISTS `+replaySchema+` CASCADE`); e != nil {
			opts.Logger.Warn("replay: drop the unused new tables", "err", e)
		}
	}
	return res, err
}

// Verify rebuilds the read models aside, compares them with the live ones
// and validates the log, without changing anything: Replay with Verify and
// DryRun.
func Verify(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store, opts ReplayOptions) (VerifyReport, error) {
	opts.Verify, opts.DryRun = true, true
	res, err := Replay(ctx, pool, store, opts)
	if err != nil {
		return VerifyReport{}, err
	}
	return *res.Verify, nil
}

type replayer struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
	opts  ReplayOptions
	start time.Time

	events    atomic.Int64
	total     atomic.Int64
	loadTime  time.Duration
	phase     atomic.Value // string
	validator *domain.LogValidator
	report    *VerifyReport
}

func (r *replayer) progress() ReplayProgress {
	p := ReplayProgress{Events: r.events.Load(), Total: r.total.Load(), Elapsed: time.Since(r.start)}
	p.Phase, _ = r.phase.Load().(string)
	load := p.Elapsed
	if r.loadTime > 0 {
		load = r.loadTime
	}
	if load > 0 {
		p.Rate = float64(p.Events) / load.Seconds()
	}
	if p.Phase == PhaseLoad && p.Rate > 0 && p.Total > p.Events {
		p.Remaining = time.Duration(float64(p.Total-p.Events) / p.Rate * float64(time.Second))
	}
	return p
}

func (r *replayer) enter(phase string) {
	r.phase.Store(phase)
	if r.opts.Progress != nil {
		r.opts.Progress(r.progress())
	}
}

func (r *replayer) run(ctx context.Context) (ReplayResult, error) {
	res := ReplayResult{}
	r.enter(PhaseLoad)
	if err := r.prepare(ctx); err != nil {
		return res, err
	}
	stop := r.reportProgress()
	from, b, err := r.load(ctx)
	stop()
	if err != nil {
		return res, err
	}
	r.loadTime = time.Since(r.start)
	res.Load = r.loadTime

	// state_history is complete: its indexes are built while the final rows
	// of the other tables are written, and each of those tables gets its
	// indexes as soon as its rows are in.
	r.enter(PhaseIndex)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.index(gctx, "state_history") })
	g.Go(func() error { return r.writeFinal(gctx, b) })
	if err := g.Wait(); err != nil {
		return res, err
	}
	r.opts.Logger.Debug("replay: final rows written and indexed", "flow_runs", len(b.flowOrder), "task_runs", len(b.taskOrder), "elapsed", time.Since(r.start))

	r.enter(PhaseCatchUp)
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("replay: %w", err)
	}
	// The connection's search path sends the projector's statements to the
	// new tables; it is closed afterwards rather than returned to the pool.
	defer func() {
		c := conn.Hijack()
		_ = c.Close(context.WithoutCancel(ctx))
	}()
	if _, err := conn.Exec(ctx, `SET search_path TO `+replaySchema+`, public`); err != nil {
		return res, fmt.Errorf("replay: %w", err)
	}
	for {
		next, n, err := r.catchUpOn(ctx, conn, from, nil, 10000, r.count)
		if err != nil {
			return res, err
		}
		from = next
		if n < 10000 {
			break
		}
	}
	var swapped bool
	var at eventstore.Checkpoint
	for attempt := 1; ; attempt++ {
		swapped, at, err = r.swap(ctx, conn, from)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == pgerrLockNotAvailable && attempt < 5 {
			r.opts.Logger.Warn("replay: the live tables stayed busy; trying the swap again", "attempt", attempt, "err", err)
			continue
		}
		if err != nil {
			return res, err
		}
		break
	}
	res.Swapped, res.Checkpoint = swapped, at
	res.Events = r.events.Load()
	res.Duration = time.Since(r.start)
	if r.report != nil {
		if err := r.validator.Finish(); err != nil {
			r.report.addViolation(err)
		}
		r.report.Events = r.events.Load()
		r.report.Checkpoint = at.String()
		r.report.Position, r.report.TransactionID = at.Position, at.TransactionID
		r.report.Clean = len(r.report.Violations) == 0 && r.report.differences() == 0
		res.Verify = r.report
	}
	r.enter(PhaseDone)
	return res, nil
}

// reportProgress calls the Progress option every ProgressInterval until the
// returned function is called.
func (r *replayer) reportProgress() func() {
	if r.opts.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(r.opts.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				r.opts.Progress(r.progress())
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// count adds applied events to the progress and, when verifying, checks
// them with the log validator.
func (r *replayer) count(envs []domain.Envelope) {
	r.validate(envs)
	r.events.Add(int64(len(envs)))
}

// validate checks events with the log validator, when verifying.
func (r *replayer) validate(envs []domain.Envelope) {
	if r.validator == nil {
		return
	}
	for i := range envs {
		if err := r.validator.Check(envs[i]); err != nil {
			r.report.addViolation(err)
		}
	}
}
