package commands

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/riverjob"
)

// ReleaseDeploymentSlots frees the concurrency slots of flow runs that end
// in tx and gives them to the oldest due runs waiting for a slot of the same
// deployments: it records their FlowRunPending and queues their root tasks
// with client, in tx. It returns the runs it admitted.
//
// Call it in every transaction that ends flow runs (completed, failed,
// crashed or cancelled), after their events are appended: a slot is freed
// when the last event of its run, as tx sees it, ends the run, so passing a
// run that has not ended changes nothing. For runs of deployments without a
// concurrency limit it costs one index lookup. A slot that is not released
// this way is freed at the scheduler's next tick.
func ReleaseDeploymentSlots(ctx context.Context, tx pgx.Tx, store *eventstore.Store, enq Enqueuer, flowRunIDs []uuid.UUID, actor string) ([]uuid.UUID, error) {
	if len(flowRunIDs) == 0 {
		return nil, nil
	}
	rows, err := tx.Query(ctx, `SELECT DISTINCT deployment_id FROM deployment_run_slots WHERE flow_run_id = ANY($1)`, flowRunIDs)
	if err != nil {
		return nil, fmt.Errorf("find slots of ended runs: %w", err)
	}
	deployments, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("find slots of ended runs: %w", err)
	}
	if len(deployments) == 0 {
		return nil, nil
	}
	slices.SortFunc(deployments, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	var admitted []uuid.UUID
	now := time.Now()
	for _, id := range deployments {
		if err := lockDeploymentSlots(ctx, tx, id); err != nil {
			return nil, err
		}
	}
	for _, id := range deployments {
		d, _, err := loadDeployment(ctx, store, tx, id)
		if err != nil {
			return nil, err
		}
		a, err := admitTx(ctx, tx, store, enq, d, now, domain.Metadata{Actor: actor})
		if err != nil {
			return nil, err
		}
		admitted = append(admitted, a.admitted...)
	}
	return admitted, nil
}

func lockDeploymentSlots(ctx context.Context, tx pgx.Tx, deploymentID uuid.UUID) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1::int, hashtext($2))`, slotLockSpace, deploymentID.String()); err != nil {
		return fmt.Errorf("lock concurrency slots of deployment %s: %w", deploymentID, err)
	}
	return nil
}

// admission is what admitTx did and found.
type admission struct {
	admitted  []uuid.UUID
	cancelled []uuid.UUID
	// nextDue is the due time of the first waiting run not due yet (zero
	// when none): admission has something to do then.
	nextDue time.Time
	// busy says that runs hold slots or wait for one: their slots must be
	// checked again, as a run may end without releasing its slot.
	busy bool
}

// TerminalEventTypes are the event types that end a flow run.
var TerminalEventTypes = []string{
	domain.FlowRunCompleted{}.EventType(), domain.FlowRunFailed{}.EventType(),
	domain.FlowRunCrashed{}.EventType(), domain.FlowRunCancelled{}.EventType(),
}

// slotsSQL reads a deployment's concurrency slots, each with the type of
// its run's last event.
var slotsSQL = `
SELECT s.flow_run_id, s.state, s.due_at, ` + eventstore.LastTypeSQL("s.flow_run_id") + `
FROM deployment_run_slots s
WHERE s.deployment_id = $1
ORDER BY s.due_at, s.created_at, s.flow_run_id`

// admitTx brings deployment d's slots up to date under its slot lock: it
// frees the slots of runs that ended, then goes through the waiting runs
// that are due, oldest first, admitting them while slots are free (all of
// them when d has no limit any more); with no slot free, policy cancel_new
// cancels them and enqueue leaves them (and every later one) waiting.
func admitTx(ctx context.Context, tx pgx.Tx, store *eventstore.Store, enq Enqueuer, d domain.Deployment, now time.Time, meta domain.Metadata) (admission, error) {
	var a admission
	if err := lockDeploymentSlots(ctx, tx, d.ID); err != nil {
		return a, err
	}
	rows, err := tx.Query(ctx, slotsSQL, d.ID)
	if err != nil {
		return a, fmt.Errorf("read concurrency slots: %w", err)
	}
	type slot struct {
		id       uuid.UUID
		state    string
		due      time.Time
		lastType string
	}
	slots, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (slot, error) {
		var s slot
		err := row.Scan(&s.id, &s.state, &s.due, &s.lastType)
		return s, err
	})
	if err != nil {
		return a, fmt.Errorf("read concurrency slots: %w", err)
	}
	var (
		ended   []uuid.UUID
		active  int
		waiting []slot
	)
	for _, s := range slots {
		switch {
		case s.lastType == "" || slices.Contains(TerminalEventTypes, s.lastType):
			ended = append(ended, s.id)
		case s.state == "active":
			active++
		default:
			waiting = append(waiting, s)
		}
	}
	if len(ended) > 0 {
		if _, err := tx.Exec(ctx, `DELETE FROM deployment_run_slots WHERE flow_run_id = ANY($1)`, ended); err != nil {
			return a, fmt.Errorf("free slots of ended runs: %w", err)
		}
	}
	limit := d.Spec.ConcurrencyLimit
	var admit, reject []uuid.UUID
	for i, s := range waiting {
		if s.due.After(now) {
			a.nextDue = s.due
			break
		}
		if limit == 0 || active < limit {
			admit = append(admit, s.id)
			active++
			continue
		}
		if d.Spec.ConcurrencyPolicy == domain.ConcurrencyCancelNew {
			reject = append(reject, s.id)
			continue
		}
		// enqueue: this run and every later one wait for a slot
		for _, later := range waiting[i:] {
			if later.due.After(now) {
				a.nextDue = later.due
				break
			}
		}
		break
	}
	if len(reject) > 0 {
		m := meta
		m.Reason = ReasonConcurrencyLimit
		if a.cancelled, err = cancelNotStartedTx(ctx, tx, store, d.ID, reject, m); err != nil {
			return a, err
		}
		if err := reportCancelledChildrenTx(ctx, tx, store, enq, a.cancelled, m.Reason, now); err != nil {
			return a, err
		}
	}
	if len(admit) > 0 {
		if a.admitted, err = admitRunsTx(ctx, tx, store, enq, admit, now, meta); err != nil {
			return a, err
		}
	}
	a.busy = active > 0 || len(waiting) > len(admit)+len(reject)
	return a, nil
}

// admitRunsTx gives slots to waiting runs: each SCHEDULED one gets its
// FlowRunPending and its root tasks queued now. A run whose cancellation was
// asked while it waited ends CANCELLED instead, and frees its slot.
func admitRunsTx(ctx context.Context, tx pgx.Tx, store *eventstore.Store, enq Enqueuer, ids []uuid.UUID, now time.Time, meta domain.Metadata) ([]uuid.UUID, error) {
	runs, err := readFlowRuns(ctx, store, tx, ids)
	if err != nil {
		return nil, err
	}
	u := newUnitOfWork(store)
	var (
		admitted, cancelling []uuid.UUID
		jobs                 []riverjob.Job
	)
	for _, id := range ids {
		fr := runs[id]
		if fr.State.Type == domain.Cancelling {
			cancelling = append(cancelling, id)
			continue
		}
		admitted = append(admitted, id)
		if fr.State.Type != domain.Scheduled || fr.RunCount > 0 {
			continue // it holds the slot it already uses
		}
		u.putFlowRun(fr)
		m := meta
		m.Reason, m.CorrelationID = ReasonSlotFree, id.String()
		if _, err := u.decideFlowRun(id, domain.MarkFlowRunPending{}, m); err != nil {
			return nil, err
		}
		for _, name := range fr.Flow.Roots() {
			jobs = append(jobs, taskJob(fr, name, 1, now, now))
		}
	}
	if err := u.flush(ctx, tx); err != nil {
		return nil, err
	}
	if len(jobs) > 0 {
		if err := enq.EnqueueTx(ctx, tx, jobs); err != nil {
			return nil, fmt.Errorf("queue root tasks of admitted runs: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, `
UPDATE deployment_run_slots SET state = 'active', admitted_at = $2 WHERE flow_run_id = ANY($1)`, admitted, now); err != nil {
		return nil, fmt.Errorf("admit runs: %w", err)
	}
	if len(cancelling) > 0 {
		m := meta
		m.Reason = "cancelled while waiting for a concurrency slot"
		cancelled, err := cancelNotStartedTx(ctx, tx, store, uuid.Nil, cancelling, m)
		if err != nil {
			return nil, err
		}
		if err := reportCancelledChildrenTx(ctx, tx, store, enq, cancelled, m.Reason, now); err != nil {
			return nil, err
		}
	}
	return admitted, nil
}
