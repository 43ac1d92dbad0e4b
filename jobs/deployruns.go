package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// Reasons recorded in the metadata of the events that deployment
// concurrency limits cause.
const (
	ReasonConcurrencyLimit = "concurrency limit reached" // a run cancelled under concurrency_policy cancel_new
	ReasonSlotFree         = "concurrency slot free"     // a waiting run admitted: its root tasks are queued
)

// Advisory lock namespaces (the first key of the two-key form) of the
// transaction-scoped locks this file takes; the second key is hashtext of
// the id.
const (
	slotLockSpace        = 0x6f726473 // "ords": one deployment's concurrency slots
	idempotencyLockSpace = 0x6f726469 // "ordi": one deployment's idempotency key
)

// DeploymentRuns creates runs of deployments: their parameters merged with
// the deployment's and checked against its parameters_schema, within its
// concurrency limit.
//
// Concurrency limits are kept in the write-side table deployment_run_slots.
// Every run of a deployment with a concurrency_limit is created SCHEDULED
// with no task queued (RunCreateParams.Hold) and waits in that table. It is
// admitted when it is due and fewer than concurrency_limit runs of the
// deployment are active: its FlowRunPending is recorded and its root tasks
// are queued, in the same transaction. When none is free, concurrency_policy
// enqueue keeps it waiting, in order of due time, and cancel_new cancels it
// with the reason "concurrency limit reached". Admission happens when the run
// is created (if it is due), in every transaction that calls
// ReleaseDeploymentSlots when runs end, and at every scheduler tick, which
// also frees the slots of runs that ended without calling it.
type DeploymentRuns struct {
	svc *Service
}

// NewDeploymentRuns returns the runs of deployments, created through svc.
func NewDeploymentRuns(svc *Service) *DeploymentRuns {
	return &DeploymentRuns{svc: svc}
}

// RunRequest asks for a run of a deployment.
type RunRequest struct {
	// Parameters override the deployment's, key by key.
	Parameters map[string]any
	// Name of the run. Defaults to the flow name and a random suffix.
	Name string
	// ScheduledAt is when the run is due. Zero or past means now.
	ScheduledAt time.Time
	// IdempotencyKey, when set, makes the request idempotent for the
	// deployment and actor: a request with a key the same actor already
	// used returns the run the first one created, and changes nothing.
	IdempotencyKey string
}

// RunFromDeployment creates a run of the deployment. The deployment must
// exist and not be deleted (else a not-found error); the overrides must name
// parameters it has (domain's CheckParameterNames) and the merged parameters
// must satisfy its parameters_schema (else an invalid error whose details
// name "parameters.X", and nothing is stored). Under a concurrency limit the
// run returned may be SCHEDULED and waiting for a slot, or CANCELLED with the
// reason "concurrency limit reached" (policy cancel_new).
func (r *DeploymentRuns) RunFromDeployment(ctx context.Context, deploymentID uuid.UUID, req RunRequest, actor string) (domain.FlowRun, error) {
	if actor == "" {
		actor = "system"
	}
	if err := validRunName(req.Name); err != nil {
		return domain.FlowRun{}, err
	}
	var run domain.FlowRun
	err := r.svc.store.InTx(ctx, func(tx pgx.Tx) error {
		d, _, err := loadDeployment(ctx, r.svc.store, tx, deploymentID)
		if err != nil {
			return err
		}
		if d.Stream == 0 || d.Deleted {
			return domain.Errorf(domain.CodeNotFound, "deployment %s not found", deploymentID)
		}
		if err := d.Spec.CheckParameterNames(req.Parameters); err != nil {
			return err
		}
		params := domain.MergeParameters(d.Spec.Parameters, req.Parameters)
		if err := d.Spec.CheckParameters(params); err != nil {
			return err
		}
		if req.IdempotencyKey != "" {
			existing, found, err := findIdempotentRun(ctx, tx, deploymentID, actor, req.IdempotencyKey)
			if err != nil {
				return err
			}
			if found {
				run, err = readFlowRun(ctx, r.svc.store, tx, existing)
				return err
			}
		}
		run, err = startDeploymentRunTx(ctx, tx, r.svc.store, r.svc.river, d, RunCreateParams{
			Parameters: params, Name: req.Name, ScheduledAt: req.ScheduledAt,
			IdempotencyKey: req.IdempotencyKey, Actor: actor,
		}, runIdentity{})
		return err
	})
	if err != nil {
		return domain.FlowRun{}, err
	}
	if r.svc.opts.DueTimer != nil && run.ScheduledAt.After(time.Now()) {
		r.svc.opts.DueTimer.Wake()
	}
	return run, nil
}

// findIdempotentRun returns the run that already holds the actor's key,
// after taking a transaction lock on (deployment, actor, key) so that a
// concurrent request with the same key waits for this transaction and then
// finds its run.
func findIdempotentRun(ctx context.Context, tx pgx.Tx, deploymentID uuid.UUID, actor, key string) (uuid.UUID, bool, error) {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1::int, hashtext($2))`,
		idempotencyLockSpace, deploymentID.String()+actor+"\n"+key); err != nil { // a uuid has a fixed length
		return uuid.Nil, false, fmt.Errorf("lock idempotency key: %w", err)
	}
	var id uuid.UUID
	err := tx.QueryRow(ctx, `
SELECT flow_run_id FROM flow_run_idempotency_keys WHERE deployment_id = $1 AND actor = $2 AND idempotency_key = $3`, deploymentID, actor, key).Scan(&id)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return uuid.Nil, false, nil
	case err != nil:
		return uuid.Nil, false, fmt.Errorf("read idempotency key: %w", err)
	}
	return id, true, nil
}

// startDeploymentRunTx creates a run of d (createDeploymentRunTx) and, under
// a concurrency limit, admits what can start now. It returns the run as it
// is then: under a limit, admitted (PENDING), waiting for a slot
// (SCHEDULED) or cancelled by policy cancel_new.
func startDeploymentRunTx(ctx context.Context, tx pgx.Tx, store *eventstore.Store, client *river.Client[pgx.Tx], d domain.Deployment, p RunCreateParams, ident runIdentity) (domain.FlowRun, error) {
	run, err := createDeploymentRunTx(ctx, tx, store, client, d, p, ident)
	if err != nil || d.Spec.ConcurrencyLimit == 0 {
		return run, err
	}
	if _, err := admitTx(ctx, tx, store, client, d, time.Now(), domain.Metadata{Actor: p.Actor}); err != nil {
		return domain.FlowRun{}, err
	}
	return readFlowRun(ctx, store, tx, run.ID)
}

// createDeploymentRunTx creates a run of d from p, whose Parameters are
// already merged and checked, with ident's id (a new one when it has none).
// The deployment fills in what the run is made of. The run stays SCHEDULED
// until a worker starts it, and one the scheduler does not create is
// recorded for the scheduler's lateness check. Under a concurrency limit the
// run is held and recorded as waiting; the caller then admits (admitTx)
// what can start.
func createDeploymentRunTx(ctx context.Context, tx pgx.Tx, store *eventstore.Store, client *river.Client[pgx.Tx], d domain.Deployment, p RunCreateParams, ident runIdentity) (domain.FlowRun, error) {
	if ident.id == uuid.Nil {
		var err error
		if ident.id, err = uuid.NewV7(); err != nil {
			return domain.FlowRun{}, fmt.Errorf("new flow run id: %w", err)
		}
	}
	p.DeploymentID, p.DeploymentName, p.DeploymentVersion = d.ID, d.Spec.Name, d.Version
	p.WorkQueue, p.Tags, p.Flow = d.Spec.WorkQueue, d.Spec.Tags, d.Spec.Flow
	p.KeepScheduled = true
	p.Hold = d.Spec.ConcurrencyLimit > 0
	run, err := createRun(ctx, tx, store, client, p, ident)
	if err != nil {
		return run, err
	}
	if !p.AutoScheduled { // the scheduler checks its own runs in scheduled_runs
		if _, err := tx.Exec(ctx, `
INSERT INTO run_lateness_checks (flow_run_id, scheduled_at) VALUES ($1, $2) ON CONFLICT (flow_run_id) DO NOTHING`,
			run.ID, run.ScheduledAt); err != nil {
			return domain.FlowRun{}, fmt.Errorf("record the lateness check of the run: %w", err)
		}
	}
	if !p.Hold {
		return run, nil
	}
	_, err = tx.Exec(ctx, `
INSERT INTO deployment_run_slots (flow_run_id, deployment_id, state, due_at) VALUES ($1, $2, 'waiting', $3)
ON CONFLICT (flow_run_id) DO NOTHING`, run.ID, d.ID, run.ScheduledAt)
	if err != nil {
		return domain.FlowRun{}, fmt.Errorf("record waiting run: %w", err)
	}
	return run, nil
}

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
func ReleaseDeploymentSlots(ctx context.Context, tx pgx.Tx, store *eventstore.Store, client *river.Client[pgx.Tx], flowRunIDs []uuid.UUID, actor string) ([]uuid.UUID, error) {
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
		a, err := admitTx(ctx, tx, store, client, d, now, domain.Metadata{Actor: actor})
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

// terminalEventTypes are the event types that end a flow run.
var terminalEventTypes = []string{
	domain.FlowRunCompleted{}.EventType(), domain.FlowRunFailed{}.EventType(),
	domain.FlowRunCrashed{}.EventType(), domain.FlowRunCancelled{}.EventType(),
}

// admitTx brings deployment d's slots up to date under its slot lock: it
// frees the slots of runs that ended, then goes through the waiting runs
// that are due, oldest first, admitting them while slots are free (all of
// them when d has no limit any more); with no slot free, policy cancel_new
// cancels them and enqueue leaves them (and every later one) waiting.
func admitTx(ctx context.Context, tx pgx.Tx, store *eventstore.Store, client *river.Client[pgx.Tx], d domain.Deployment, now time.Time, meta domain.Metadata) (admission, error) {
	var a admission
	if err := lockDeploymentSlots(ctx, tx, d.ID); err != nil {
		return a, err
	}
	rows, err := tx.Query(ctx, `
SELECT s.flow_run_id, s.state, s.due_at,
       coalesce((SELECT e.type FROM events e WHERE e.stream_id = s.flow_run_id ORDER BY e.version DESC LIMIT 1), '')
FROM deployment_run_slots s
WHERE s.deployment_id = $1
ORDER BY s.due_at, s.created_at, s.flow_run_id`, d.ID)
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
		case s.lastType == "" || slices.Contains(terminalEventTypes, s.lastType):
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
		if err := reportCancelledChildrenTx(ctx, tx, store, client, a.cancelled, m.Reason, now); err != nil {
			return a, err
		}
	}
	if len(admit) > 0 {
		if a.admitted, err = admitRunsTx(ctx, tx, store, client, admit, now, meta); err != nil {
			return a, err
		}
	}
	a.busy = active > 0 || len(waiting) > len(admit)+len(reject)
	return a, nil
}

// admitRunsTx gives slots to waiting runs: each SCHEDULED one gets its
// FlowRunPending and its root tasks queued now. A run whose cancellation was
// asked while it waited ends CANCELLED instead, and frees its slot.
func admitRunsTx(ctx context.Context, tx pgx.Tx, store *eventstore.Store, client *river.Client[pgx.Tx], ids []uuid.UUID, now time.Time, meta domain.Metadata) ([]uuid.UUID, error) {
	runs, err := readFlowRuns(ctx, store, tx, ids)
	if err != nil {
		return nil, err
	}
	u := newUnitOfWork(store)
	var (
		admitted, cancelling []uuid.UUID
		jobs                 []river.InsertManyParams
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
		if _, err := client.InsertManyFastTx(ctx, tx, jobs); err != nil {
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
		if err := reportCancelledChildrenTx(ctx, tx, store, client, cancelled, m.Reason, now); err != nil {
			return nil, err
		}
	}
	return admitted, nil
}

// readFlowRuns folds several flow runs in one query.
func readFlowRuns(ctx context.Context, store *eventstore.Store, q eventstore.Querier, ids []uuid.UUID) (map[uuid.UUID]domain.FlowRun, error) {
	envs, err := store.ReadStreams(ctx, q, ids)
	if err != nil {
		return nil, err
	}
	runs := make(map[uuid.UUID]domain.FlowRun, len(ids))
	for _, id := range ids {
		runs[id] = domain.FlowRun{ID: id}
	}
	for _, e := range envs {
		if e.StreamType != domain.StreamFlowRun {
			return nil, fmt.Errorf("stream %s is a %s, not a flow run", e.StreamID, e.StreamType)
		}
		r := runs[e.StreamID].Apply(e.Event, e.RecordedAt)
		r.Version = e.Version
		runs[e.StreamID] = r
	}
	for _, id := range ids {
		if runs[id].State.IsZero() {
			return nil, domain.Errorf(domain.CodeNotFound, "flow run %s not found", id)
		}
	}
	return runs, nil
}

// cancelNotStartedTx cancels the runs of ids that no task of has started
// (SCHEDULED, PENDING or CANCELLING with a run count of 0): FlowRunCancelled
// and TaskRunCancelled (not run) for each of their task runs, with meta's
// reason; their queued River jobs are cancelled, their fan-in rows marked
// cancelled, their progress set to finished, their slots freed and their
// scheduled_runs rows settled, all in tx. Runs that started are left alone.
// It returns the runs it cancelled. deploymentID, when not nil, is the
// deployment whose slot lock is taken first.
func cancelNotStartedTx(ctx context.Context, tx pgx.Tx, store *eventstore.Store, deploymentID uuid.UUID, ids []uuid.UUID, meta domain.Metadata) ([]uuid.UUID, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if deploymentID != uuid.Nil {
		if err := lockDeploymentSlots(ctx, tx, deploymentID); err != nil {
			return nil, err
		}
	}
	runs, err := readFlowRuns(ctx, store, tx, ids)
	if err != nil {
		return nil, err
	}
	u := newUnitOfWork(store)
	var (
		cancelled []uuid.UUID
		taskRuns  []uuid.UUID
		metas     = map[uuid.UUID]domain.Metadata{}
	)
	for _, id := range ids {
		fr := runs[id]
		switch fr.State.Type {
		case domain.Scheduled, domain.Pending, domain.Cancelling:
		default:
			continue
		}
		if fr.RunCount > 0 {
			continue
		}
		m := meta
		m.CorrelationID = id.String()
		metas[id] = m
		u.putFlowRun(fr)
		if _, err := u.decideFlowRun(id, domain.FinishFlowRun{Outcome: domain.Cancelled, Message: meta.Reason}, m); err != nil {
			return nil, err
		}
		cancelled = append(cancelled, id)
		for _, tr := range fr.TaskRunIDs {
			taskRuns = append(taskRuns, tr)
		}
	}
	if len(cancelled) == 0 {
		return nil, nil
	}
	if err := u.loadTaskRuns(ctx, tx, taskRuns); err != nil {
		return nil, err
	}
	for _, id := range taskRuns {
		tr := u.taskRun(id)
		if _, err := u.decideTaskRun(id, domain.CancelTaskRun{NotRun: true}, metas[tr.FlowRunID]); err != nil {
			return nil, err
		}
	}
	if err := u.flush(ctx, tx); err != nil {
		return nil, err
	}
	batch := &pgx.Batch{}
	for _, id := range cancelled {
		batch.Queue(`
UPDATE river_job SET state = 'cancelled', finalized_at = now()
WHERE args ->> 'flow_run_id' = $2::text AND kind = $1 AND state IN ('available', 'scheduled', 'retryable', 'pending')`,
			KindTaskRun, id)
	}
	batch.Queue(`UPDATE task_run_fanin SET cancelled = true WHERE flow_run_id = ANY($1)`, cancelled)
	batch.Queue(`UPDATE flow_run_progress SET task_runs_unfinished = 0, updated_at = now() WHERE flow_run_id = ANY($1)`, cancelled)
	batch.Queue(`DELETE FROM deployment_run_slots WHERE flow_run_id = ANY($1)`, cancelled)
	batch.Queue(`UPDATE scheduled_runs SET state = 'done' WHERE flow_run_id = ANY($1)`, cancelled)
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return nil, fmt.Errorf("clean up cancelled runs: %w", err)
	}
	return cancelled, nil
}

// validRunName accepts an empty name (one is made up) or up to 200
// printable characters.
func validRunName(name string) error {
	if len(name) > 200 {
		return domain.Invalid("name", "at most 200 characters, got %d", len(name))
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return domain.Invalid("name", "must be printable text, found %q", r)
		}
	}
	return nil
}
