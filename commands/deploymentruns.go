package commands

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

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
	err := retryTx(ctx, r.svc.store, func(tx pgx.Tx) error {
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
		run, err = startDeploymentRunTx(ctx, tx, r.svc.store, r.svc.enq, d, RunCreateParams{
			Parameters: params, Name: req.Name, ScheduledAt: req.ScheduledAt,
			IdempotencyKey: req.IdempotencyKey, Actor: actor,
		}, runIdentity{})
		return err
	})
	if err != nil {
		return domain.FlowRun{}, err
	}
	if r.svc.opts.DueTimer != nil && run.ScheduledAt.After(time.Now()) {
		r.svc.opts.DueTimer.WakeAt(run.ScheduledAt)
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
func startDeploymentRunTx(ctx context.Context, tx pgx.Tx, store *eventstore.Store, enq Enqueuer, d domain.Deployment, p RunCreateParams, ident runIdentity) (domain.FlowRun, error) {
	run, err := createDeploymentRunTx(ctx, tx, store, enq, d, p, ident)
	if err != nil || d.Spec.ConcurrencyLimit == 0 {
		return run, err
	}
	if _, err := admitTx(ctx, tx, store, enq, d, time.Now(), domain.Metadata{Actor: p.Actor}); err != nil {
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
func createDeploymentRunTx(ctx context.Context, tx pgx.Tx, store *eventstore.Store, enq Enqueuer, d domain.Deployment, p RunCreateParams, ident runIdentity) (domain.FlowRun, error) {
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
	run, err := createRun(ctx, tx, store, enq, p, ident)
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
