package commands

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// ScheduleOptions tune Schedules (see jobs.SchedulerOptions, which sets
// them).
type ScheduleOptions struct {
	Lookahead  time.Duration
	MinRuns    int
	MaxRuns    int
	LateAfter  time.Duration
	MaxCatchUp int
	Interval   time.Duration
	Logger     *slog.Logger
}

// Schedules is the write side of deployments' schedules, one deployment
// per transaction (ScheduleDeployment): runs created ahead, late runs
// marked, catch-up policies applied, runs made obsolete by a schedule
// change or a pause cancelled, and runs waiting for a concurrency slot
// admitted. jobs.Scheduler runs it; jobs/doc.go describes the rules.
type Schedules struct {
	store *eventstore.Store
	svc   *Service
	opts  ScheduleOptions
}

// NewSchedules returns the schedules' commands; runs are created through
// svc.
func NewSchedules(svc *Service, opts ScheduleOptions) *Schedules {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Schedules{store: svc.store, svc: svc, opts: opts}
}

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

// runShapingFields are the deployment spec fields that what a run is made
// of comes from: when one changes, runs created ahead with the old value are
// cancelled and created again.
var runShapingFields = []string{"schedule", "flow", "parameters", "parameters_schema", "work_queue", "tags"}

// lateChecksPerTick bounds the runs markLateUnscheduled checks in one
// transaction; a tick with more to check asks for the next one at once.
const lateChecksPerTick = 1000

// lateChecksSQL takes the lateness checks due by $1, at most $2, each with
// whether its run's stream still exists.
var lateChecksSQL = `
DELETE FROM run_lateness_checks WHERE flow_run_id IN (
    SELECT flow_run_id FROM run_lateness_checks WHERE scheduled_at <= $1
    ORDER BY scheduled_at LIMIT $2 FOR UPDATE SKIP LOCKED)
RETURNING flow_run_id, ` + eventstore.ExistsSQL("flow_run_id")

// MarkLateUnscheduled applies the lateness rule to the runs the scheduler
// did not create (manual and sub-flow runs, listed in run_lateness_checks
// when created): each one that has not started LateAfter after its
// scheduled time gets FlowRunLate, like the scheduler's own runs, and its
// row goes once checked. Catch-up policies do not apply to them. It returns
// when the next row is due for its check.
func (s *Schedules) MarkLateUnscheduled(ctx context.Context, now time.Time) (time.Time, error) {
	lateBefore := now.Add(-s.opts.LateAfter)
	var first *time.Time
	if err := s.store.Pool().QueryRow(ctx, `SELECT min(scheduled_at) FROM run_lateness_checks`).Scan(&first); err != nil {
		return time.Time{}, fmt.Errorf("read lateness checks: %w", err)
	}
	switch {
	case first == nil:
		return time.Time{}, nil
	case first.After(lateBefore):
		return first.Add(s.opts.LateAfter), nil
	}
	var checked int
	err := retryTx(ctx, s.store, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, lateChecksSQL, lateBefore, lateChecksPerTick)
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

// ScheduleDeployment does a deployment's work in one transaction, again
// when it lost a race (a run that started meanwhile, another scheduler),
// creating at most limit runs ahead. It returns when the deployment has
// work again and how many runs it created.
func (s *Schedules) ScheduleDeployment(ctx context.Context, id uuid.UUID, now time.Time, limit int) (time.Time, int, error) {
	var (
		next    time.Time
		created int
	)
	err := retryTxN(ctx, s.store, 5, func(tx pgx.Tx, _ int) error {
		var err error
		next, created, err = s.scheduleTx(ctx, tx, id, now, limit)
		return err
	})
	// The due timers hear of the runs created from createRun's notification.
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
func (s *Schedules) scheduleTx(ctx context.Context, tx pgx.Tx, id uuid.UUID, now time.Time, limit int) (time.Time, int, error) {
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
		a, err := admitTx(ctx, tx, s.store, s.svc.enq, p.deployment, now, meta)
		if err != nil {
			return time.Time{}, 0, err
		}
		next = Earliest(next, a.nextDue)
		if a.busy {
			next = Earliest(next, now.Add(s.opts.Interval))
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
// then creates its runs ahead, and returns when the deployment has work
// again and how many runs it created.
func (s *Schedules) advanceTx(ctx context.Context, tx pgx.Tx, p schedulePlan, cur *scheduleCursor, now time.Time, limit int) (time.Time, int, error) {
	if cur == nil || cur.epoch != p.epoch {
		var err error
		if cur, err = startEpoch(ctx, tx, p); err != nil {
			return time.Time{}, 0, err
		}
	}
	create, err := s.settleDueTx(ctx, tx, p, cur, now)
	if err != nil {
		return time.Time{}, 0, err
	}
	ahead, more, err := s.createRunsTx(ctx, tx, p, cur, now, create, limit)
	if err != nil {
		return time.Time{}, 0, err
	}
	next, err := s.nextWork(ctx, tx, p, cur, now, more)
	return next, len(create) + len(ahead), err
}

// startEpoch starts the deployment's schedule from p's epoch: its cursor
// begins where the epoch began.
func startEpoch(ctx context.Context, tx pgx.Tx, p schedulePlan) (*scheduleCursor, error) {
	id := p.deployment.ID
	tag, err := tx.Exec(ctx, `
INSERT INTO deployment_schedules (deployment_id, epoch, epoch_started_at, scheduled_through) VALUES ($1, $2, $3, $3)
ON CONFLICT (deployment_id) DO UPDATE SET epoch = $2, epoch_started_at = $3, scheduled_through = $3, updated_at = now()
WHERE deployment_schedules.epoch <> $2`, id, p.epoch, p.start)
	if err != nil {
		return nil, fmt.Errorf("start the schedule of deployment %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		// another scheduler started this epoch after our lock read: read again
		return nil, &eventstore.ConflictError{StreamIDs: []uuid.UUID{id}}
	}
	return &scheduleCursor{epoch: p.epoch, start: p.start, through: p.start}, nil
}

// dueRunsSQL reads a deployment's scheduled runs whose time has come and
// that are still pending.
var dueRunsSQL = `
SELECT r.flow_run_id, r.scheduled_at, r.late, ` + eventstore.LastTypeSQL("r.flow_run_id") + `,
       EXISTS (SELECT 1 FROM deployment_run_slots s WHERE s.flow_run_id = r.flow_run_id AND s.state = 'waiting')
FROM scheduled_runs r
WHERE r.deployment_id = $1 AND r.epoch = $2 AND r.state = 'pending' AND r.scheduled_at <= $3
ORDER BY r.scheduled_at`

// settleDueTx settles the deployment's due runs: those that started are no
// longer the scheduler's, late ones are caught up by the deployment's
// catch-up policy or marked late. It moves the cursor past the missed
// times and returns those the policy creates a run for.
func (s *Schedules) settleDueTx(ctx context.Context, tx pgx.Tx, p schedulePlan, cur *scheduleCursor, now time.Time) ([]time.Time, error) {
	d := p.deployment
	lateBefore := now.Add(-s.opts.LateAfter)
	rows, err := tx.Query(ctx, dueRunsSQL, d.ID, p.epoch, now)
	if err != nil {
		return nil, fmt.Errorf("read due scheduled runs: %w", err)
	}
	due, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (dueRun, error) {
		var r dueRun
		err := row.Scan(&r.id, &r.at, &r.late, &r.lastType, &r.held)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("read due scheduled runs: %w", err)
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
			return nil, fmt.Errorf("settle started runs: %w", err)
		}
	}

	// Catch-up: late runs, and times up to lateBefore that have no run.
	missed, skipped := missedTimes(*d.Spec.Schedule, cur.through, lateBefore, s.opts.MaxCatchUp)
	if lateBefore.After(cur.through) {
		cur.through = lateBefore
	}
	c := catchUp(d.Spec.CatchUp, catchable, missed)
	if skipped += c.skipped; skipped > 0 {
		s.opts.Logger.Info("scheduler skipped missed runs", "deployment", d.Spec.Name, "catch_up", d.Spec.CatchUp, "skipped", skipped, "created", len(c.create))
	}
	if len(c.cancel) > 0 {
		m := domain.Metadata{Actor: SchedulerActor, Reason: c.reason}
		if _, err := cancelNotStartedTx(ctx, tx, s.store, d.ID, c.cancel, m); err != nil {
			return nil, err
		}
	}
	var mark []uuid.UUID
	for _, r := range late {
		if !r.late && !slices.Contains(c.cancel, r.id) {
			mark = append(mark, r.id)
		}
	}
	if err := s.markLateTx(ctx, tx, mark); err != nil {
		return nil, err
	}
	return c.create, nil
}

// catchUpPlan is what a catch-up policy does with late runs and missed
// times.
type catchUpPlan struct {
	create  []time.Time // missed times that get a run
	cancel  []uuid.UUID // late runs to cancel, with reason
	reason  string
	skipped int // missed times that get none
}

// catchUp applies a catch-up policy to the late runs that never started
// (oldest first) and the missed times: "all" keeps every late run and
// creates a run for each missed time; "none" creates nothing and cancels
// every late run; "latest" keeps only the newest of all of them.
func catchUp(policy string, catchable []dueRun, missed []time.Time) catchUpPlan {
	var c catchUpPlan
	switch policy {
	case domain.CatchUpAll:
		c.create = missed
	case domain.CatchUpNone:
		c.reason = ReasonCatchUpNone
		for _, r := range catchable {
			c.cancel = append(c.cancel, r.id)
		}
		c.skipped = len(missed)
	default: // domain.CatchUpLatest
		c.reason = ReasonCatchUpLatest
		keep := len(catchable) - 1 // the newest late run, unless a missed time is newer
		if n := len(missed); n > 0 && (keep < 0 || missed[n-1].After(catchable[keep].at)) {
			c.create = missed[n-1:]
			c.skipped = n - 1
			keep = -1
		} else {
			c.skipped = len(missed)
		}
		for i, r := range catchable {
			if i != keep {
				c.cancel = append(c.cancel, r.id)
			}
		}
	}
	return c
}

// createRunsTx creates the runs of the missed times in create, then those
// ahead: every time up to the horizon, at most limit in all, the earliest
// first. It records how far the runs reach, prunes long-settled rows, and
// returns the times ahead it created and whether more remain.
func (s *Schedules) createRunsTx(ctx context.Context, tx pgx.Tx, p schedulePlan, cur *scheduleCursor, now time.Time, create []time.Time, limit int) ([]time.Time, bool, error) {
	d := p.deployment
	sched := *d.Spec.Schedule
	target := s.horizon(sched, now)
	ahead := timesBetween(sched, cur.through, target)
	more := false
	if room := max(limit-len(create), 0); len(ahead) > room {
		ahead, more = ahead[:room], true
	}
	for _, at := range append(create, ahead...) {
		if err := s.createScheduledRun(ctx, tx, d, p.epoch, at); err != nil {
			return nil, false, err
		}
	}
	switch {
	case more && len(ahead) > 0:
		cur.through = ahead[len(ahead)-1]
	case !more && target.After(cur.through):
		cur.through = target
	}
	if _, err := tx.Exec(ctx, `
UPDATE deployment_schedules SET scheduled_through = $2, updated_at = now() WHERE deployment_id = $1`, d.ID, cur.through); err != nil {
		return nil, false, fmt.Errorf("record schedule progress: %w", err)
	}
	// Rows of runs long settled are no longer needed: the cursor keeps
	// their times from being scheduled again.
	if _, err := tx.Exec(ctx, `
DELETE FROM scheduled_runs WHERE ctid IN (
    SELECT ctid FROM scheduled_runs WHERE deployment_id = $1 AND state = 'done' AND scheduled_at < $2 LIMIT 1000)`,
		d.ID, now.Add(-24*time.Hour)); err != nil {
		return nil, false, fmt.Errorf("prune settled scheduled runs: %w", err)
	}
	return ahead, more, nil
}

// nextWork returns when the deployment has work again: a scheduled time
// passes (fewer runs ahead), the next time enters the lookahead, a run may
// become late, or late runs may have started. The first two are not urgent
// and wait until halfway to the time after (LateAfter at most), so that the
// scheduler's work does not fall on the instants when runs are due; more
// runs to create ahead (more) are created at once while the deployment has
// less than FillAfter of them, else at the next tick.
func (s *Schedules) nextWork(ctx context.Context, tx pgx.Tx, p schedulePlan, cur *scheduleCursor, now time.Time, more bool) (time.Time, error) {
	sched := *p.deployment.Spec.Schedule
	var next time.Time
	if t := sched.Next(now, 2); len(t) > 0 {
		next = halfway(t, s.opts.LateAfter)
	}
	switch t := sched.Next(cur.through, 2); {
	case more && cur.through.Before(now.Add(FillAfter)):
		next = now
	case more:
		next = Earliest(next, now.Add(s.opts.Interval))
	case len(t) > 0:
		next = Earliest(next, halfway(t, s.opts.LateAfter).Add(-s.opts.Lookahead))
	}
	var (
		firstPending *time.Time
		anyLate      bool
	)
	if err := tx.QueryRow(ctx, `
SELECT min(scheduled_at) FILTER (WHERE NOT late), coalesce(bool_or(late), false)
FROM scheduled_runs WHERE deployment_id = $1 AND state = 'pending'`, p.deployment.ID).Scan(&firstPending, &anyLate); err != nil {
		return time.Time{}, fmt.Errorf("read pending scheduled runs: %w", err)
	}
	if firstPending != nil {
		next = Earliest(next, firstPending.Add(s.opts.LateAfter))
	}
	if anyLate {
		next = Earliest(next, now.Add(s.opts.Interval))
	}
	if next.Before(now) {
		next = now
	}
	return next, nil
}

// FillAfter is how far ahead a deployment's runs must reach before creating
// more of them waits for the next tick.
const FillAfter = time.Minute

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
func (s *Schedules) horizon(sched domain.Schedule, now time.Time) time.Time {
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

// MaxTimesBetween bounds timesBetween, against a horizon far from where the
// schedule was left.
const MaxTimesBetween = 10000

// timesBetween returns the scheduled times in (after, through].
func timesBetween(sched domain.Schedule, after, through time.Time) []time.Time {
	var out []time.Time
	for t := after; len(out) < MaxTimesBetween; {
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
func (s *Schedules) markLateTx(ctx context.Context, tx pgx.Tx, ids []uuid.UUID) error {
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
func (s *Schedules) createScheduledRun(ctx context.Context, tx pgx.Tx, d domain.Deployment, epoch int64, at time.Time) error {
	params := domain.MergeParameters(d.Spec.Parameters, nil)
	if err := d.Spec.CheckParameters(params); err != nil {
		return fmt.Errorf("default parameters of deployment %s: %w", d.Spec.Name, err)
	}
	run, err := createDeploymentRunTx(ctx, tx, s.store, s.svc.enq, d, RunCreateParams{
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

// Earliest returns the earlier of a and b, a zero time meaning none: the
// times that ScheduleDeployment and MarkLateUnscheduled return combine so.
func Earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}
