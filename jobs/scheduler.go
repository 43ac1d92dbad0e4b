package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/riverjob"
)

// schedulerLockKey is the session advisory lock the leading scheduler holds
// ("ordosche").
const schedulerLockKey int64 = 0x6f72646f73636865

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
	if o.MaxRuns < 0 || o.MaxRuns > commands.MaxTimesBetween {
		p.Add("MaxRuns", "must be between 0 (the default) and %d", commands.MaxTimesBetween)
	}
	if o.MinRuns > commands.MaxTimesBetween {
		p.Add("MinRuns", "must be at most %d", commands.MaxTimesBetween)
	}
	if o.LateAfter < 0 {
		p.Add("LateAfter", "must not be negative")
	}
	if o.MaxCatchUp < 0 || o.MaxCatchUp > commands.MaxTimesBetween {
		p.Add("MaxCatchUp", "must be between 0 (the default) and %d", commands.MaxTimesBetween)
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
// concurrency slot (commands.Schedules decides each deployment's work). One
// scheduler leads at a time; see the package doc for the rules.
type Scheduler struct {
	pool      *pgxpool.Pool
	schedules *commands.Schedules
	opts      SchedulerOptions

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
func NewScheduler(pool *pgxpool.Pool, svc *commands.Service, opts SchedulerOptions) (*Scheduler, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	schedules := commands.NewSchedules(svc, commands.ScheduleOptions{
		Lookahead: opts.Lookahead, MinRuns: opts.MinRuns, MaxRuns: opts.MaxRuns, LateAfter: opts.LateAfter,
		MaxCatchUp: opts.MaxCatchUp, Interval: opts.Interval, Logger: opts.Logger,
	})
	return &Scheduler{pool: pool, schedules: schedules, opts: opts, seen: map[uuid.UUID]deploymentWork{}}, nil
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

// deploymentsSQL lists every deployment with its stream's version, when its
// first waiting run is due and how far its runs ahead reach.
var deploymentsSQL = `
WITH ids AS (
    SELECT deployment_id FROM deployment_names
    UNION SELECT deployment_id FROM deployment_schedules
    UNION SELECT deployment_id FROM deployment_run_slots
)
SELECT ids.deployment_id,
       ` + eventstore.VersionSQL("ids.deployment_id") + `,
       (SELECT min(s.due_at) FROM deployment_run_slots s WHERE s.deployment_id = ids.deployment_id AND s.state = 'waiting'),
       (SELECT d.scheduled_through FROM deployment_schedules d WHERE d.deployment_id = ids.deployment_id)
FROM ids`

// Tick does one pass over the deployments that have work (all of them
// after leadership changed) and returns when the next one has work. It is
// safe to call while another scheduler ticks, in this process or another.
func (s *Scheduler) Tick(ctx context.Context) (time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	rows, err := s.pool.Query(ctx, deploymentsSQL)
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
			next = commands.Earliest(next, w.next)
			if l.waitingDue != nil && l.waitingDue.After(now) {
				next = commands.Earliest(next, *l.waitingDue)
			}
			continue
		}
		limit := s.opts.RunsPerTx
		filling := l.through != nil && !l.through.Before(now.Add(commands.FillAfter))
		if filling && !backlogRead {
			// Runs due now come before runs an hour ahead: while task
			// runs that came due within LateAfter wait for a worker, the
			// lookahead is not filled (older ones are a queue without
			// workers, not a burst).
			backlogRead = true
			backlog, err := riverjob.Backlog(ctx, s.pool, s.opts.LateAfter)
			if err != nil {
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
				next = commands.Earliest(next, now.Add(s.opts.Interval))
				continue
			}
			limit = min(limit, budget)
		}
		wn, created, err := s.schedules.ScheduleDeployment(ctx, l.id, now, limit)
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
		next = commands.Earliest(next, wn)
	}
	s.seen = seen
	wn, err := s.schedules.MarkLateUnscheduled(ctx, now)
	if err != nil {
		if ctx.Err() != nil {
			return time.Time{}, ctx.Err()
		}
		errs = append(errs, err)
		wn = now.Add(s.opts.Interval)
	}
	next = commands.Earliest(next, wn)
	return next, errors.Join(errs...)
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
