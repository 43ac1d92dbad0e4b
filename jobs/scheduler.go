package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// Reasons the scheduler records in the metadata of the events it causes.
const (
	ReasonScheduleChanged   = "schedule changed"
	ReasonDeploymentPaused  = "deployment paused"
	ReasonDeploymentDeleted = "deployment deleted"
	ReasonCatchUpLatest     = "superseded by catch-up policy latest"
	ReasonCatchUpNone       = "missed; catch_up: none"
)

// SchedulerActor is the actor of the events the scheduler causes.
const SchedulerActor = "scheduler"

// schedulerLockKey is the session advisory lock the leading scheduler holds
// ("ordosche").
const schedulerLockKey int64 = 0x6f72646f73636865

// runShapingFields are the deployment spec fields that what a run is made
// of comes from: when one changes, runs created ahead with the old value are
// cancelled and created again.
var runShapingFields = []string{"schedule", "flow", "parameters", "parameters_schema", "work_queue", "tags"}

// SchedulerOptions tune a Scheduler. The zero value of each field means its
// default.
type SchedulerOptions struct {
	// Lookahead is how far ahead runs are created: every scheduled time up
	// to now+Lookahead has its run, so that upcoming runs are visible as
	// SCHEDULED. Defaults to 1h.
	Lookahead time.Duration
	// MinRuns is how many upcoming runs each scheduled deployment has at
	// least, however far ahead they are. Defaults to 3.
	MinRuns int
	// MaxRuns caps the upcoming runs of one deployment when Lookahead holds
	// more (a 1 s schedule would need 3,600 for an hour): the scheduler
	// then keeps MaxRuns ahead (MinRuns if it is larger). Defaults to 100,
	// Prefect's default.
	MaxRuns int
	// LateAfter is how long after its scheduled time a run that has not
	// started is late: it gets a FlowRunLate event, and the catch-up policy
	// of its deployment applies to it. Defaults to 15s.
	LateAfter time.Duration
	// MaxCatchUp is the most missed runs that catch_up "all" creates at
	// once, the latest ones; older ones are skipped and logged. Defaults to
	// 100.
	MaxCatchUp int
	// RunsPerTx is the most runs ahead that one deployment's transaction
	// creates, the earliest first; a deployment with more to create gets
	// them in the next ticks. A new deployment's first runs are thus
	// committed at once, not after its whole hour. Defaults to 5.
	RunsPerTx int
	// RunsPerTick is the most runs ahead one tick creates for deployments
	// that already have runs for the next minute; the rest waits for the
	// next tick, Interval later, so that filling the lookahead of many
	// deployments does not crowd out the runs that are due meanwhile. A
	// tick creates none of them while task runs due within LateAfter wait
	// for a worker.
	// Deployments with fewer runs ahead are worked first. Defaults to 200.
	RunsPerTick int
	// Interval is the longest the scheduler sleeps between two ticks; it
	// wakes earlier when a run is due to be marked late or admitted, and
	// when events are appended. It is also how often a server that is not
	// the leader tries to become it. Defaults to 1s.
	Interval time.Duration
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// Logger receives the scheduler's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

func (o *SchedulerOptions) validate() error {
	p := &domain.Problems{Message: "invalid scheduler options"}
	if o.Lookahead < 0 {
		p.Add("Lookahead", "must not be negative")
	}
	if o.MinRuns < 0 {
		p.Add("MinRuns", "must not be negative")
	}
	if o.MaxRuns < 0 || o.MaxRuns > maxTimesBetween {
		p.Add("MaxRuns", "must be between 0 (the default) and %d", maxTimesBetween)
	}
	if o.MinRuns > maxTimesBetween {
		p.Add("MinRuns", "must be at most %d", maxTimesBetween)
	}
	if o.LateAfter < 0 {
		p.Add("LateAfter", "must not be negative")
	}
	if o.MaxCatchUp < 0 || o.MaxCatchUp > maxTimesBetween {
		p.Add("MaxCatchUp", "must be between 0 (the default) and %d", maxTimesBetween)
	}
	if o.Interval < 0 {
		p.Add("Interval", "must not be negative")
	}
	if o.RunsPerTx < 0 {
		p.Add("RunsPerTx", "must not be negative")
	}
	if o.RunsPerTick < 0 {
		p.Add("RunsPerTick", "must not be negative")
	}
	return p.Err()
}

func (o *SchedulerOptions) setDefaults() {
	if o.Lookahead == 0 {
		o.Lookahead = time.Hour
	}
	if o.MinRuns == 0 {
		o.MinRuns = 3
	}
	if o.MaxRuns == 0 {
		o.MaxRuns = 100
	}
	if o.LateAfter == 0 {
		o.LateAfter = 15 * time.Second
	}
	if o.MaxCatchUp == 0 {
		o.MaxCatchUp = 100
	}
	if o.Interval == 0 {
		o.Interval = time.Second
	}
	if o.RunsPerTx == 0 {
		o.RunsPerTx = 5
	}
	if o.RunsPerTick == 0 {
		o.RunsPerTick = 200
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Scheduler keeps the runs of scheduled deployments created ahead of time,
// marks late runs, applies catch-up policies, cancels the runs a schedule
// change or a pause makes obsolete, and admits runs waiting for a deployment
// concurrency slot.
//
// One scheduler leads at a time: Run holds a Postgres session advisory lock
// on a connection of its own (taken again after that connection is lost),
// so with several servers exactly one schedules. Creation is idempotent
// anyway: each scheduled run has a row in scheduled_runs whose primary key
// is (deployment, epoch, scheduled time), and the deployment's row in
// deployment_schedules is locked while its runs are created, so even two
// schedulers ticking at once create each run once.
//
// Each tick, for every deployment that is not paused or deleted and has a
// schedule:
//
//   - Runs created ahead: every scheduled time in (now, now+Lookahead], and
//     at least the next MinRuns, capped at MaxRuns (see SchedulerOptions),
//     has a SCHEDULED run with AutoScheduled set, created with the
//     deployment's default parameters.
//   - Lateness: a run it created that no task of has started LateAfter
//     after its scheduled time gets FlowRunLate (if it is still
//     SCHEDULED), with the reason "not started within LateAfter of its
//     scheduled time". So do the other runs of deployments (manual and
//     sub-flow runs), whatever their deployment's schedule.
//   - Catch-up: late runs that never started, and scheduled times up to
//     now-LateAfter that have no run because no scheduler was up (the
//     deployment's schedule is followed from where the scheduler last got,
//     or from when the schedule began: its creation, last change or
//     resumption), are handled by the deployment's catch_up policy: "all"
//     keeps every late run and creates a run for each missed time (the
//     latest MaxCatchUp of them; older ones are skipped and logged);
//     "latest" keeps only the newest of all of them, late run or missed time
//     (a missed time gets a run), and cancels every other late run with the
//     reason "superseded by catch-up policy latest"; "none" creates nothing
//     for missed times and cancels every late run with the reason "missed;
//     catch_up: none". Runs waiting for a concurrency slot are left to the
//     concurrency policy. Runs for missed times are due at once: their
//     scheduled_at in the log is when they were created, and scheduled_runs
//     keeps the time they stand for.
//   - Obsolete runs: when the deployment's schedule, or what its runs are
//     made of (flow, parameters, parameters_schema, work_queue, tags),
//     changes, or it is paused or deleted, its auto-scheduled runs that
//     have not started are cancelled, with the reason "schedule changed",
//     "deployment changed: FIELDS", "deployment paused" or "deployment
//     deleted", and their queued River jobs cancelled, in one transaction.
//     Deployment commands do this in their own transaction already; the
//     tick catches runs created concurrently with the command.
//   - Concurrency: runs waiting for a slot of a deployment with a
//     concurrency_limit are admitted when due and a slot is free, and the
//     slots of runs that ended are freed (see DeploymentRuns).
type Scheduler struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
	svc   *Service
	opts  SchedulerOptions

	leader atomic.Bool

	mu   sync.Mutex // one tick at a time
	seen map[uuid.UUID]deploymentWork
}

// deploymentWork is what a tick remembers of a deployment: the stream
// version it worked on and when it has work again.
type deploymentWork struct {
	version  int64
	next     time.Time
	lastWork time.Time
}

// NewScheduler returns a scheduler that creates runs through svc; Run runs
// it.
func NewScheduler(pool *pgxpool.Pool, store *eventstore.Store, svc *Service, opts SchedulerOptions) (*Scheduler, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	return &Scheduler{pool: pool, store: store, svc: svc, opts: opts, seen: map[uuid.UUID]deploymentWork{}}, nil
}

// IsLeader reports whether this scheduler holds the leader lock now.
func (s *Scheduler) IsLeader() bool { return s.leader.Load() }

func (s *Scheduler) setLeader(on bool) {
	if s.leader.Swap(on) != on {
		s.mu.Lock()
		s.seen = map[uuid.UUID]deploymentWork{} // a new leader looks at everything
		s.mu.Unlock()
		s.opts.Logger.Info("scheduler leadership", "leader", on)
	}
}

// Run campaigns for leadership and, while leader, ticks, until ctx ends. It
// reconnects after losing its connection (and with it the lock).
func (s *Scheduler) Run(ctx context.Context) error {
	for {
		err := s.session(ctx)
		s.setLeader(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.opts.Logger.Warn("scheduler lost its database connection; reconnecting", "err", err, "in", s.opts.Interval)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(s.opts.Interval):
		}
	}
}

// session runs on one dedicated connection, which holds the leader lock
// and listens for new events; it returns when that connection fails.
func (s *Scheduler) session(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn.Close(cctx) // ending the session releases the lock
	}()
	minGap := min(100*time.Millisecond, s.opts.Interval)
	var lastTick time.Time
	for {
		if !s.IsLeader() {
			var got bool
			if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, schedulerLockKey).Scan(&got); err != nil {
				return fmt.Errorf("try the leader lock: %w", err)
			}
			if !got {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(s.opts.Interval):
				}
				continue
			}
			if _, err := conn.Exec(ctx, `LISTEN `+eventstore.Channel); err != nil {
				return fmt.Errorf("listen: %w", err)
			}
			s.setLeader(true)
		}
		// The lock lives as long as the session: check it is still there
		// before acting as the leader.
		if _, err := conn.Exec(ctx, `SELECT 1`); err != nil {
			return fmt.Errorf("check the leader connection: %w", err)
		}
		if wait := minGap - time.Since(lastTick); wait > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
		sleep := s.opts.Interval
		next, err := s.Tick(ctx)
		lastTick = time.Now()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			s.opts.Logger.Error("scheduler tick", "err", err)
		case !next.IsZero():
			sleep = min(max(next.Sub(s.opts.Now()), 0), s.opts.Interval)
		}
		if err := waitForNotification(ctx, conn, sleep); err != nil {
			return err
		}
	}
}

// waitForNotification sleeps up to d, or until a notification arrives.
func waitForNotification(ctx context.Context, conn *pgx.Conn, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	_, err := conn.WaitForNotification(wctx)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case wctx.Err() != nil:
		return nil // slept d
	}
	return fmt.Errorf("wait for notifications: %w", err)
}

// Tick does one pass over the deployments that have work (all of them
// after leadership changed) and returns when the next one has work. It is
// safe to call while another scheduler ticks, in this process or another.
func (s *Scheduler) Tick(ctx context.Context) (time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	rows, err := s.pool.Query(ctx, `
WITH ids AS (
    SELECT deployment_id FROM deployment_names
    UNION SELECT deployment_id FROM deployment_schedules
    UNION SELECT deployment_id FROM deployment_run_slots
)
SELECT ids.deployment_id,
       coalesce((SELECT max(e.version) FROM events e WHERE e.stream_id = ids.deployment_id), 0),
       (SELECT min(s.due_at) FROM deployment_run_slots s WHERE s.deployment_id = ids.deployment_id AND s.state = 'waiting'),
       (SELECT d.scheduled_through FROM deployment_schedules d WHERE d.deployment_id = ids.deployment_id)
FROM ids`)
	if err != nil {
		return time.Time{}, fmt.Errorf("list deployments: %w", err)
	}
	type listed struct {
		id         uuid.UUID
		version    int64
		waitingDue *time.Time
		through    *time.Time // how far its runs ahead reach; nil when it has none
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (listed, error) {
		var l listed
		err := row.Scan(&l.id, &l.version, &l.waitingDue, &l.through)
		return l, err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("list deployments: %w", err)
	}
	// The deployments with the fewest runs ahead first: their next runs are
	// the most urgent.
	slices.SortStableFunc(list, func(a, b listed) int {
		switch {
		case a.through == nil || b.through == nil:
			return cmpBool(a.through != nil, b.through != nil)
		}
		return a.through.Compare(*b.through)
	})
	budget := s.opts.RunsPerTick
	backlogRead := false
	var (
		next time.Time
		errs []error
		seen = make(map[uuid.UUID]deploymentWork, len(list))
	)
	for _, l := range list {
		w, known := s.seen[l.id]
		work := !known || w.version != l.version || (!w.next.IsZero() && !now.Before(w.next))
		if l.waitingDue != nil && !now.Before(*l.waitingDue) && (!known || l.waitingDue.After(w.lastWork)) {
			work = true // a run waiting for a slot became due
		}
		if !work {
			seen[l.id] = w
			next = earliest(next, w.next)
			if l.waitingDue != nil && l.waitingDue.After(now) {
				next = earliest(next, *l.waitingDue)
			}
			continue
		}
		limit := s.opts.RunsPerTx
		filling := l.through != nil && !l.through.Before(now.Add(fillAfter))
		if filling && !backlogRead {
			// Runs due now come before runs an hour ahead: while task
			// runs that came due within LateAfter wait for a worker, the
			// lookahead is not filled (older ones are a queue without
			// workers, not a burst).
			backlogRead = true
			var backlog bool
			if err := s.pool.QueryRow(ctx, `
SELECT EXISTS (SELECT 1 FROM river_job WHERE state = 'available' AND kind = $1
    AND scheduled_at <= now() AND scheduled_at > now() - $2::interval)`, KindTaskRun, s.opts.LateAfter).Scan(&backlog); err != nil {
				return time.Time{}, fmt.Errorf("read the task backlog: %w", err)
			}
			if backlog {
				budget = 0
			}
		}
		if filling {
			if budget <= 0 {
				// its runs for the next minute exist: the rest waits
				if known {
					seen[l.id] = w
				}
				next = earliest(next, now.Add(s.opts.Interval))
				continue
			}
			limit = min(limit, budget)
		}
		wn, created, err := s.tickDeployment(ctx, l.id, now, limit)
		if filling {
			budget -= created
		}
		if err != nil {
			if ctx.Err() != nil {
				return time.Time{}, ctx.Err()
			}
			errs = append(errs, fmt.Errorf("deployment %s: %w", l.id, err))
			wn = now.Add(s.opts.Interval)
		}
		seen[l.id] = deploymentWork{version: l.version, next: wn, lastWork: now}
		next = earliest(next, wn)
	}
	s.seen = seen
	wn, err := s.markLateUnscheduled(ctx, now)
	if err != nil {
		if ctx.Err() != nil {
			return time.Time{}, ctx.Err()
		}
		errs = append(errs, err)
		wn = now.Add(s.opts.Interval)
	}
	next = earliest(next, wn)
	return next, errors.Join(errs...)
}

// lateChecksPerTick bounds the runs markLateUnscheduled checks in one
// transaction; a tick with more to check asks for the next one at once.
const lateChecksPerTick = 1000

// markLateUnscheduled applies the lateness rule to the runs the scheduler
// did not create (manual and sub-flow runs, listed in run_lateness_checks
// when created): each one that has not started LateAfter after its
// scheduled time gets FlowRunLate, like the scheduler's own runs, and its
// row goes once checked. Catch-up policies do not apply to them. It returns
// when the next row is due for its check.
func (s *Scheduler) markLateUnscheduled(ctx context.Context, now time.Time) (time.Time, error) {
	lateBefore := now.Add(-s.opts.LateAfter)
	var first *time.Time
	if err := s.pool.QueryRow(ctx, `SELECT min(scheduled_at) FROM run_lateness_checks`).Scan(&first); err != nil {
		return time.Time{}, fmt.Errorf("read lateness checks: %w", err)
	}
	switch {
	case first == nil:
		return time.Time{}, nil
	case first.After(lateBefore):
		return first.Add(s.opts.LateAfter), nil
	}
	var checked int
	err := retryingTx(ctx, s.store, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
DELETE FROM run_lateness_checks WHERE flow_run_id IN (
    SELECT flow_run_id FROM run_lateness_checks WHERE scheduled_at <= $1
    ORDER BY scheduled_at LIMIT $2 FOR UPDATE SKIP LOCKED)
RETURNING flow_run_id, EXISTS (SELECT 1 FROM events e WHERE e.stream_id = flow_run_id)`, lateBefore, lateChecksPerTick)
		if err != nil {
			return fmt.Errorf("take due lateness checks: %w", err)
		}
		var (
			ids    []uuid.UUID
			id     uuid.UUID
			exists bool
		)
		checked = 0
		_, err = pgx.ForEachRow(rows, []any{&id, &exists}, func() error {
			checked++
			if exists { // else the run was archived and removed
				ids = append(ids, id)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("take due lateness checks: %w", err)
		}
		return s.markLateTx(ctx, tx, ids)
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("mark late runs outside schedules: %w", err)
	}
	if checked == lateChecksPerTick {
		return now, nil
	}
	return now.Add(s.opts.Interval), nil
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// earliest returns the earlier of a and b, a zero time meaning none.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

// tickDeployment does a deployment's work in one transaction, again when
// it lost a race (a run that started meanwhile, another scheduler), creating
// at most limit runs ahead; it returns how many it created.
func (s *Scheduler) tickDeployment(ctx context.Context, id uuid.UUID, now time.Time, limit int) (time.Time, int, error) {
	var (
		next    time.Time
		created int
		err     error
	)
	for attempt := 1; ; attempt++ {
		err = s.store.InTx(ctx, func(tx pgx.Tx) error {
			var err error
			next, created, err = s.scheduleTx(ctx, tx, id, now, limit)
			return err
		})
		if err == nil || !retryable(err) || attempt == 5 {
			break
		}
	}
	if err == nil && created > 0 && s.svc.opts.DueTimer != nil {
		s.svc.opts.DueTimer.Wake()
	}
	return next, created, err
}

// scheduleCursor is a row of deployment_schedules.
type scheduleCursor struct {
	epoch   int64
	start   time.Time
	through time.Time
}

// lockScheduleCursor locks and returns the deployment's row of
// deployment_schedules, nil when it has none.
func lockScheduleCursor(ctx context.Context, tx pgx.Tx, id uuid.UUID) (*scheduleCursor, error) {
	var c scheduleCursor
	err := tx.QueryRow(ctx, `
SELECT epoch, epoch_started_at, scheduled_through FROM deployment_schedules WHERE deployment_id = $1 FOR UPDATE`, id).
		Scan(&c.epoch, &c.start, &c.through)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lock schedule of deployment %s: %w", id, err)
	}
	return &c, nil
}

// schedulePlan is what a deployment's stream says about its schedule.
type schedulePlan struct {
	deployment domain.Deployment
	// active: the schedule creates runs (it exists, and the deployment is
	// neither paused nor deleted).
	active bool
	// epoch is the stream version from which the current schedule and run
	// contents apply; start is when that event was recorded.
	epoch int64
	start time.Time
	// obsolete is the reason to cancel runs created before the epoch, or
	// every not-started run when the schedule is not active.
	obsolete string
}

// planSchedule folds a deployment's events into its schedule plan.
func planSchedule(id uuid.UUID, envs []domain.Envelope) schedulePlan {
	p := schedulePlan{deployment: domain.Deployment{ID: id}}
	d := &p.deployment
	for _, env := range envs {
		wasPaused := d.Paused
		*d = d.Apply(env.Event, env.RecordedAt)
		d.Stream = env.Version
		begin := func(reason string) { p.epoch, p.start, p.obsolete = env.Version, env.RecordedAt, reason }
		switch e := env.Event.(type) {
		case domain.DeploymentCreated:
			begin(ReasonScheduleChanged)
		case domain.DeploymentUpdated:
			var changed []string
			for _, f := range e.Changed {
				if slices.Contains(runShapingFields, f) {
					changed = append(changed, f)
				}
			}
			switch {
			case slices.Contains(changed, "schedule"):
				begin(ReasonScheduleChanged)
			case len(changed) > 0:
				begin("deployment changed: " + strings.Join(changed, ", "))
			case wasPaused && !d.Paused:
				begin(ReasonDeploymentPaused)
			}
		case domain.DeploymentResumed:
			if wasPaused {
				begin(ReasonDeploymentPaused)
			}
		}
	}
	switch {
	case d.Stream == 0 || d.Deleted:
		p.obsolete = ReasonDeploymentDeleted
	case d.Paused:
		p.obsolete = ReasonDeploymentPaused
	case d.Spec.Schedule == nil:
		p.obsolete = ReasonScheduleChanged
	default:
		p.active = true
	}
	return p
}

// cancelObsoleteScheduledRuns cancels the deployment's auto-scheduled runs
// that have not started and that its current state makes obsolete: all of
// them when it is paused, deleted or has no schedule, those of earlier
// epochs otherwise. Deployment commands call it in their transaction.
func cancelObsoleteScheduledRuns(ctx context.Context, tx pgx.Tx, store *eventstore.Store, id uuid.UUID, actor string) error {
	cur, err := lockScheduleCursor(ctx, tx, id)
	if err != nil || cur == nil {
		return err // never scheduled: nothing to cancel
	}
	_, envs, err := loadDeployment(ctx, store, tx, id)
	if err != nil {
		return err
	}
	return cancelObsoleteTx(ctx, tx, store, planSchedule(id, envs), domain.Metadata{Actor: actor})
}

func cancelObsoleteTx(ctx context.Context, tx pgx.Tx, store *eventstore.Store, p schedulePlan, meta domain.Metadata) error {
	rows, err := tx.Query(ctx, `
SELECT flow_run_id FROM scheduled_runs
WHERE deployment_id = $1 AND state = 'pending' AND (NOT $2 OR epoch <> $3)
ORDER BY scheduled_at`, p.deployment.ID, p.active, p.epoch)
	if err != nil {
		return fmt.Errorf("find obsolete scheduled runs: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil || len(ids) == 0 {
		return err
	}
	meta.Reason = p.obsolete
	if _, err := cancelNotStartedTx(ctx, tx, store, p.deployment.ID, ids, meta); err != nil {
		return err
	}
	// those that started are no longer the scheduler's
	if _, err := tx.Exec(ctx, `UPDATE scheduled_runs SET state = 'done' WHERE flow_run_id = ANY($1)`, ids); err != nil {
		return fmt.Errorf("settle obsolete scheduled runs: %w", err)
	}
	return nil
}

// scheduleTx does one deployment's work within tx, creating at most limit
// runs ahead, and returns when it has work again and how many runs it
// created.
func (s *Scheduler) scheduleTx(ctx context.Context, tx pgx.Tx, id uuid.UUID, now time.Time, limit int) (time.Time, int, error) {
	cur, err := lockScheduleCursor(ctx, tx, id)
	if err != nil {
		return time.Time{}, 0, err
	}
	// Read the deployment after the lock: a command that changed it and
	// holds the lock has committed by now.
	_, envs, err := loadDeployment(ctx, s.store, tx, id)
	if err != nil {
		return time.Time{}, 0, err
	}
	p := planSchedule(id, envs)
	meta := domain.Metadata{Actor: SchedulerActor}
	if err := cancelObsoleteTx(ctx, tx, s.store, p, meta); err != nil {
		return time.Time{}, 0, err
	}
	var (
		next    time.Time
		created int
	)
	switch {
	case p.active:
		if next, created, err = s.advanceTx(ctx, tx, p, cur, now, limit); err != nil {
			return time.Time{}, 0, err
		}
	case cur != nil && p.deployment.Deleted:
		if _, err := tx.Exec(ctx, `DELETE FROM deployment_schedules WHERE deployment_id = $1`, id); err != nil {
			return time.Time{}, 0, fmt.Errorf("forget the schedule of a deleted deployment: %w", err)
		}
	}
	if p.deployment.Stream > 0 {
		a, err := admitTx(ctx, tx, s.store, s.svc.river, p.deployment, now, meta)
		if err != nil {
			return time.Time{}, 0, err
		}
		next = earliest(next, a.nextDue)
		if a.busy {
			next = earliest(next, now.Add(s.opts.Interval))
		}
	}
	return next, created, nil
}

// dueRun is a scheduled run whose time has come and that is still pending.
type dueRun struct {
	id       uuid.UUID
	at       time.Time
	late     bool
	lastType string
	held     bool // waiting for a concurrency slot
}

// notStartedTypes are the last events of a flow run no task of has started.
var notStartedTypes = []string{
	domain.FlowRunCreated{}.EventType(), domain.FlowRunLate{}.EventType(), domain.FlowRunPending{}.EventType(),
}

// advanceTx settles, marks late and catches up the deployment's due runs,
// then creates its runs ahead.
func (s *Scheduler) advanceTx(ctx context.Context, tx pgx.Tx, p schedulePlan, cur *scheduleCursor, now time.Time, limit int) (time.Time, int, error) {
	d := p.deployment
	id := d.ID
	sched := *d.Spec.Schedule
	if cur == nil || cur.epoch != p.epoch {
		cur = &scheduleCursor{epoch: p.epoch, start: p.start, through: p.start}
		tag, err := tx.Exec(ctx, `
INSERT INTO deployment_schedules (deployment_id, epoch, epoch_started_at, scheduled_through) VALUES ($1, $2, $3, $3)
ON CONFLICT (deployment_id) DO UPDATE SET epoch = $2, epoch_started_at = $3, scheduled_through = $3, updated_at = now()
WHERE deployment_schedules.epoch <> $2`, id, p.epoch, p.start)
		if err != nil {
			return time.Time{}, 0, fmt.Errorf("start the schedule of deployment %s: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			// another scheduler started this epoch after our lock read: read again
			return time.Time{}, 0, &eventstore.ConflictError{StreamIDs: []uuid.UUID{id}}
		}
	}
	lateBefore := now.Add(-s.opts.LateAfter)

	// Runs whose time has come.
	rows, err := tx.Query(ctx, `
SELECT r.flow_run_id, r.scheduled_at, r.late,
       coalesce((SELECT e.type FROM events e WHERE e.stream_id = r.flow_run_id ORDER BY e.version DESC LIMIT 1), ''),
       EXISTS (SELECT 1 FROM deployment_run_slots s WHERE s.flow_run_id = r.flow_run_id AND s.state = 'waiting')
FROM scheduled_runs r
WHERE r.deployment_id = $1 AND r.epoch = $2 AND r.state = 'pending' AND r.scheduled_at <= $3
ORDER BY r.scheduled_at`, id, p.epoch, now)
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("read due scheduled runs: %w", err)
	}
	due, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (dueRun, error) {
		var r dueRun
		err := row.Scan(&r.id, &r.at, &r.late, &r.lastType, &r.held)
		return r, err
	})
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("read due scheduled runs: %w", err)
	}
	var (
		started   []uuid.UUID
		late      []dueRun // not started, LateAfter past their time
		catchable []dueRun // late and not waiting for a slot
	)
	for _, r := range due {
		switch {
		case !slices.Contains(notStartedTypes, r.lastType):
			started = append(started, r.id)
		case !r.at.After(lateBefore):
			late = append(late, r)
			if !r.held {
				catchable = append(catchable, r)
			}
		}
	}
	if len(started) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE scheduled_runs SET state = 'done' WHERE flow_run_id = ANY($1)`, started); err != nil {
			return time.Time{}, 0, fmt.Errorf("settle started runs: %w", err)
		}
	}

	// Catch-up: late runs, and times up to lateBefore that have no run.
	missed, skipped := missedTimes(sched, cur.through, lateBefore, s.opts.MaxCatchUp)
	if lateBefore.After(cur.through) {
		cur.through = lateBefore
	}
	var (
		create       []time.Time
		cancel       []uuid.UUID
		cancelReason string
	)
	switch d.Spec.CatchUp {
	case domain.CatchUpAll:
		create = missed
	case domain.CatchUpNone:
		cancelReason = ReasonCatchUpNone
		for _, r := range catchable {
			cancel = append(cancel, r.id)
		}
		skipped += len(missed)
	default: // domain.CatchUpLatest
		cancelReason = ReasonCatchUpLatest
		keep := len(catchable) - 1 // the newest late run, unless a missed time is newer
		if n := len(missed); n > 0 && (keep < 0 || missed[n-1].After(catchable[keep].at)) {
			create = missed[n-1:]
			skipped += n - 1
			keep = -1
		} else {
			skipped += len(missed)
		}
		for i, r := range catchable {
			if i != keep {
				cancel = append(cancel, r.id)
			}
		}
	}
	if skipped > 0 {
		s.opts.Logger.Info("scheduler skipped missed runs", "deployment", d.Spec.Name, "catch_up", d.Spec.CatchUp, "skipped", skipped, "created", len(create))
	}
	if len(cancel) > 0 {
		m := domain.Metadata{Actor: SchedulerActor, Reason: cancelReason}
		if _, err := cancelNotStartedTx(ctx, tx, s.store, id, cancel, m); err != nil {
			return time.Time{}, 0, err
		}
	}
	var mark []uuid.UUID
	for _, r := range late {
		if !r.late && !slices.Contains(cancel, r.id) {
			mark = append(mark, r.id)
		}
	}
	if err := s.markLateTx(ctx, tx, mark); err != nil {
		return time.Time{}, 0, err
	}

	// Runs ahead: every time up to the horizon, after the missed ones, at
	// most limit in all, the earliest first.
	target := s.horizon(sched, now)
	ahead := timesBetween(sched, cur.through, target)
	more := false
	if room := max(limit-len(create), 0); len(ahead) > room {
		ahead, more = ahead[:room], true
	}
	for _, at := range append(create, ahead...) {
		if err := s.createScheduledRun(ctx, tx, d, p.epoch, at); err != nil {
			return time.Time{}, 0, err
		}
	}
	switch {
	case more && len(ahead) > 0:
		cur.through = ahead[len(ahead)-1]
	case !more && target.After(cur.through):
		cur.through = target
	}
	if _, err := tx.Exec(ctx, `
UPDATE deployment_schedules SET scheduled_through = $2, updated_at = now() WHERE deployment_id = $1`, id, cur.through); err != nil {
		return time.Time{}, 0, fmt.Errorf("record schedule progress: %w", err)
	}
	// Rows of runs long settled are no longer needed: the cursor keeps
	// their times from being scheduled again.
	if _, err := tx.Exec(ctx, `
DELETE FROM scheduled_runs WHERE ctid IN (
    SELECT ctid FROM scheduled_runs WHERE deployment_id = $1 AND state = 'done' AND scheduled_at < $2 LIMIT 1000)`,
		id, now.Add(-24*time.Hour)); err != nil {
		return time.Time{}, 0, fmt.Errorf("prune settled scheduled runs: %w", err)
	}

	// When there is work again: a scheduled time passes (fewer runs ahead),
	// the next time enters the lookahead, a run may become late, or late
	// runs may have started. The first two are not urgent and wait until
	// halfway to the time after (LateAfter at most), so that the scheduler's work does not fall
	// on the instants when runs are due; more runs to create ahead are
	// created at once while the deployment has less than fillAfter of them,
	// else at the next tick.
	var next time.Time
	if t := sched.Next(now, 2); len(t) > 0 {
		next = halfway(t, s.opts.LateAfter)
	}
	switch t := sched.Next(cur.through, 2); {
	case more && cur.through.Before(now.Add(fillAfter)):
		next = now
	case more:
		next = earliest(next, now.Add(s.opts.Interval))
	case len(t) > 0:
		next = earliest(next, halfway(t, s.opts.LateAfter).Add(-s.opts.Lookahead))
	}
	var (
		firstPending *time.Time
		anyLate      bool
	)
	if err := tx.QueryRow(ctx, `
SELECT min(scheduled_at) FILTER (WHERE NOT late), coalesce(bool_or(late), false)
FROM scheduled_runs WHERE deployment_id = $1 AND state = 'pending'`, id).Scan(&firstPending, &anyLate); err != nil {
		return time.Time{}, 0, fmt.Errorf("read pending scheduled runs: %w", err)
	}
	if firstPending != nil {
		next = earliest(next, firstPending.Add(s.opts.LateAfter))
	}
	if anyLate {
		next = earliest(next, now.Add(s.opts.Interval))
	}
	if next.Before(now) {
		next = now
	}
	return next, len(create) + len(ahead), nil
}

// fillAfter is how far ahead a deployment's runs must reach before creating
// more of them waits for the next tick.
const fillAfter = time.Minute

// halfway is the time halfway between the first two of times, but at most
// limit after the first (the first when there is one only).
func halfway(times []time.Time, limit time.Duration) time.Time {
	if len(times) < 2 {
		return times[0]
	}
	return times[0].Add(min(times[1].Sub(times[0])/2, limit))
}

// horizon is the last scheduled time that must have a run now: every time
// up to now+Lookahead and at least MinRuns of them, at most MaxRuns (or
// MinRuns when larger). Zero when the schedule does not fire any more.
func (s *Scheduler) horizon(sched domain.Schedule, now time.Time) time.Time {
	times := sched.Next(now, max(s.opts.MaxRuns, s.opts.MinRuns))
	if len(times) == 0 {
		return time.Time{}
	}
	i := max(s.opts.MinRuns-1, 0)
	until := now.Add(s.opts.Lookahead)
	for i+1 < len(times) && !times[i+1].After(until) {
		i++
	}
	return times[min(i, len(times)-1)]
}

// maxTimesBetween bounds timesBetween, against a horizon far from where the
// schedule was left.
const maxTimesBetween = 10000

// timesBetween returns the scheduled times in (after, through].
func timesBetween(sched domain.Schedule, after, through time.Time) []time.Time {
	var out []time.Time
	for t := after; len(out) < maxTimesBetween; {
		batch := sched.Next(t, 100)
		for _, bt := range batch {
			if bt.After(through) {
				return out
			}
			out = append(out, bt)
		}
		if len(batch) < 100 {
			return out
		}
		t = batch[len(batch)-1]
	}
	return out
}

// maxMissedScan bounds the walk over the missed times of a cron schedule.
const maxMissedScan = 1_000_000

// missedTimes returns the latest keep scheduled times in (after, through],
// oldest first, and how many earlier ones there are (about, for interval
// schedules).
func missedTimes(sched domain.Schedule, after, through time.Time, keep int) ([]time.Time, int) {
	if !through.After(after) || keep <= 0 {
		return nil, 0
	}
	skipped := 0
	if sched.Cron == "" && sched.IntervalSeconds >= 1 {
		// interval times are a grid: start just before the last keep of them
		every := time.Duration(sched.IntervalSeconds * float64(time.Second))
		if span := every * time.Duration(keep+1); through.Sub(after) > span {
			skipped = int(through.Sub(after)/every) - keep
			after = through.Add(-span)
		}
	}
	var ring []time.Time
	for t, scanned := after, 0; scanned < maxMissedScan; {
		batch := sched.Next(t, 1000)
		for _, bt := range batch {
			if bt.After(through) {
				return ring, skipped
			}
			scanned++
			if len(ring) == keep {
				ring = ring[1:]
				skipped++
			}
			ring = append(ring, bt)
		}
		if len(batch) < 1000 {
			break
		}
		t = batch[len(batch)-1]
	}
	return ring, skipped
}

// markLateTx records FlowRunLate for the runs that are still SCHEDULED
// and flags their rows in scheduled_runs.
func (s *Scheduler) markLateTx(ctx context.Context, tx pgx.Tx, ids []uuid.UUID) error {
	if len(ids) == 0 {
		return nil
	}
	runs, err := readFlowRuns(ctx, s.store, tx, ids)
	if err != nil {
		return err
	}
	u := newUnitOfWork(s.store)
	for _, id := range ids {
		fr := runs[id]
		u.putFlowRun(fr)
		meta := domain.Metadata{
			Actor:         SchedulerActor,
			Reason:        fmt.Sprintf("not started within %s of its scheduled time", s.opts.LateAfter),
			CorrelationID: id.String(),
		}
		if _, err := u.decideFlowRun(id, domain.MarkFlowRunLate{}, meta); err != nil {
			return err
		}
	}
	if err := u.flush(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `UPDATE scheduled_runs SET late = true WHERE flow_run_id = ANY($1)`, ids); err != nil {
		return fmt.Errorf("flag late runs: %w", err)
	}
	return nil
}

// createScheduledRun creates the deployment's run for scheduled time at,
// and records it in scheduled_runs, whose key refuses a second run for
// the same (deployment, epoch, time).
func (s *Scheduler) createScheduledRun(ctx context.Context, tx pgx.Tx, d domain.Deployment, epoch int64, at time.Time) error {
	params := domain.MergeParameters(d.Spec.Parameters, nil)
	if err := d.Spec.CheckParameters(params); err != nil {
		return fmt.Errorf("default parameters of deployment %s: %w", d.Spec.Name, err)
	}
	run, err := createDeploymentRunTx(ctx, tx, s.svc.store, s.svc.river, d, RunCreateParams{
		Parameters: params, ScheduledAt: at, AutoScheduled: true, Actor: SchedulerActor,
	}, runIdentity{})
	if err != nil {
		return fmt.Errorf("create the run of %s at %s: %w", d.Spec.Name, at.Format(time.RFC3339Nano), err)
	}
	if _, err := tx.Exec(ctx, `
INSERT INTO scheduled_runs (deployment_id, epoch, scheduled_at, flow_run_id) VALUES ($1, $2, $3, $4)`,
		d.ID, epoch, at, run.ID); err != nil {
		return fmt.Errorf("record the run of %s at %s: %w", d.Spec.Name, at.Format(time.RFC3339Nano), err)
	}
	return nil
}
