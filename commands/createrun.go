package commands

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/riverjob"
)

// Service is the write side of flow runs: it turns commands into events,
// write-side rows and River jobs, each command in one transaction.
type Service struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
	enq   Enqueuer
	eng   *engine
	opts  ServiceOptions
}

// ServiceOptions tune a Service.
type ServiceOptions struct {
	// DueTimer, when set, is woken after a run is created for later, so that
	// it makes the run's jobs available on time even when it sleeps for
	// longer. Due timers in other processes hear of the run when its
	// transaction commits (riverjob.NotifyDueTx).
	DueTimer Waker
}

// Waker is a due timer, told that jobs were queued for later, the earliest
// due at at.
type Waker interface{ WakeAt(at time.Time) }

// NewService returns a Service that inserts jobs with enq.
func NewService(pool *pgxpool.Pool, store *eventstore.Store, enq Enqueuer, opts ServiceOptions) *Service {
	return &Service{pool: pool, store: store, enq: enq, eng: newEngine(store, enq), opts: opts}
}

// RunCreateParams describe a new flow run.
type RunCreateParams struct {
	DeploymentID      uuid.UUID // the nil uuid for a run without a deployment
	DeploymentName    string
	DeploymentVersion int
	// WorkQueue is the queue of the run's tasks (a task's own work_queue
	// overrides it). Defaults to "default".
	WorkQueue  string
	Tags       []string
	Parameters map[string]any // the run's parameters, already merged with the deployment's
	Flow       domain.FlowSpec
	// ScheduledAt is when the run is due. Zero means now. A past time is
	// kept as the run's due time (a scheduled run created a little late is
	// still the run due then) and the run starts at once.
	ScheduledAt time.Time
	// Name of the run. Defaults to the flow name and a random suffix.
	Name string
	// IdempotencyKey, when set, makes the create idempotent per deployment
	// and Actor: a create with a key the same actor already used returns the
	// run the first one made.
	IdempotencyKey string
	// AutoScheduled marks runs created by a deployment's schedule.
	AutoScheduled bool
	// KeepScheduled leaves a run that is due now SCHEDULED (its root tasks
	// queued all the same) until a worker starts it, so that it can be
	// marked Late like any other; else it is PENDING at once. Runs of
	// deployments have it.
	KeepScheduled bool
	// Hold creates the run SCHEDULED with none of its tasks queued, whatever
	// ScheduledAt says: it waits for a deployment concurrency slot, and the
	// slot accounting (concurrencyslots.go) queues its root tasks when it gets one.
	Hold bool
	// Actor is who asks: "token:NAME", "scheduler", "cli", ... Defaults to
	// "system".
	Actor string
}

// RunCreate creates a flow run and its task runs in one transaction. A run
// due now is PENDING and its root tasks are queued at once; a run due later
// is SCHEDULED and its root tasks are queued for that time.
func (s *Service) RunCreate(ctx context.Context, p RunCreateParams) (domain.FlowRun, error) {
	var run domain.FlowRun
	err := s.store.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		run, err = s.RunCreateTx(ctx, tx, p)
		return err
	})
	if err != nil {
		return domain.FlowRun{}, err
	}
	if s.opts.DueTimer != nil && run.ScheduledAt.After(time.Now()) {
		s.opts.DueTimer.WakeAt(run.ScheduledAt)
	}
	return run, nil
}

// RunCreateTx is RunCreate within the caller's transaction. The caller
// commits, then calls the store's Committed.
func (s *Service) RunCreateTx(ctx context.Context, tx pgx.Tx, p RunCreateParams) (domain.FlowRun, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return domain.FlowRun{}, fmt.Errorf("new flow run id: %w", err)
	}
	return createRun(ctx, tx, s.store, s.enq, p, runIdentity{id: id})
}

// runIdentity is the id of a run being created and, for a sub-flow run, its
// parent.
type runIdentity struct {
	id              uuid.UUID
	parentTaskRunID *uuid.UUID
	parentFlowRunID *uuid.UUID
}

// createRun records a new flow run and its task runs and queues its root
// tasks, within tx; enq inserts the jobs.
func createRun(ctx context.Context, tx pgx.Tx, store *eventstore.Store, enq Enqueuer, p RunCreateParams, ident runIdentity) (domain.FlowRun, error) {
	if err := p.validate(); err != nil {
		return domain.FlowRun{}, err
	}
	id := ident.id
	var err error
	if p.Actor == "" {
		p.Actor = "system"
	}
	if p.IdempotencyKey != "" {
		existing, found, err := claimIdempotencyKey(ctx, tx, p.DeploymentID, p.Actor, p.IdempotencyKey, id)
		if err != nil {
			return domain.FlowRun{}, err
		}
		if found {
			return readFlowRun(ctx, store, tx, existing)
		}
	}
	now := time.Now()
	if p.ScheduledAt.IsZero() {
		p.ScheduledAt = now
	}
	if p.WorkQueue == "" {
		p.WorkQueue = domain.DefaultWorkQueue
	}
	if p.Name == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		p.Name = p.Flow.Name + "-" + hex.EncodeToString(b[:])
	}
	if p.Parameters == nil {
		p.Parameters = map[string]any{}
	}
	taskRunIDs := make(map[string]uuid.UUID, len(p.Flow.Tasks))
	for _, t := range p.Flow.Tasks {
		if taskRunIDs[t.Name], err = uuid.NewV7(); err != nil {
			return domain.FlowRun{}, fmt.Errorf("new task run id: %w", err)
		}
	}
	meta := domain.Metadata{Actor: p.Actor, CorrelationID: id.String()}

	u := newUnitOfWork(store)
	created, err := domain.DecideFlowRun(domain.FlowRun{ID: id}, domain.CreateFlowRun{FlowRunCreated: domain.FlowRunCreated{
		Name: p.Name, DeploymentID: p.DeploymentID, DeploymentName: p.DeploymentName, DeploymentVersion: p.DeploymentVersion,
		WorkQueue: p.WorkQueue, Tags: p.Tags, Parameters: p.Parameters, Flow: p.Flow, TaskRunIDs: taskRunIDs,
		ScheduledAt: p.ScheduledAt.UTC(), AutoScheduled: p.AutoScheduled,
		ParentTaskRunID: ident.parentTaskRunID, ParentFlowRunID: ident.parentFlowRunID,
	}})
	if err != nil {
		return domain.FlowRun{}, err
	}
	u.create(id, created, meta)
	run := domain.FlowRun{ID: id}
	for _, e := range created {
		run = run.Apply(e, now)
	}
	u.putFlowRun(run)
	due := !p.ScheduledAt.After(now) && !p.Hold
	if due && !p.KeepScheduled {
		if _, err := u.decideFlowRun(id, domain.MarkFlowRunPending{}, meta); err != nil {
			return domain.FlowRun{}, err
		}
	}
	fanin := faninRows{}
	for _, t := range p.Flow.Tasks {
		u.create(taskRunIDs[t.Name], []domain.Event{domain.TaskRunCreated{FlowRunID: id, Task: t}}, meta)
		if len(t.DependsOn) > 0 {
			fanin.ids = append(fanin.ids, taskRunIDs[t.Name])
			fanin.remaining = append(fanin.remaining, int32(len(t.DependsOn)))
		}
	}
	if err := u.flush(ctx, tx); err != nil {
		return domain.FlowRun{}, err
	}
	run, _ = u.flowRun(id)

	if _, err := tx.Exec(ctx, `
INSERT INTO task_run_fanin (task_run_id, flow_run_id, remaining)
SELECT u.id, $3, u.remaining FROM unnest($1::uuid[], $2::int[]) AS u(id, remaining)`,
		fanin.ids, fanin.remaining, id); err != nil {
		return domain.FlowRun{}, fmt.Errorf("record fan-in: %w", err)
	}
	if _, err := tx.Exec(ctx, `
INSERT INTO flow_run_progress (flow_run_id, task_runs_total, task_runs_unfinished) VALUES ($1, $2, $2)`,
		id, len(p.Flow.Tasks)); err != nil {
		return domain.FlowRun{}, fmt.Errorf("record progress: %w", err)
	}
	if p.Hold {
		return run, nil
	}
	var jobs []riverjob.Job
	for _, t := range p.Flow.Tasks {
		if len(t.DependsOn) == 0 {
			jobs = append(jobs, jobFor(run, t, 1, p.ScheduledAt, now))
		}
	}
	if err := enq.EnqueueTx(ctx, tx, jobs); err != nil {
		return domain.FlowRun{}, fmt.Errorf("queue root tasks: %w", err)
	}
	if p.ScheduledAt.After(now) && len(jobs) > 0 {
		if err := riverjob.NotifyDueTx(ctx, tx, p.ScheduledAt); err != nil {
			return domain.FlowRun{}, err
		}
	}
	return run, nil
}

type faninRows struct {
	ids       []uuid.UUID
	remaining []int32
}

func (p *RunCreateParams) validate() error {
	pr := &domain.Problems{Message: "invalid flow run"}
	if err := p.Flow.Validate(); err != nil {
		var de *domain.Error
		if errors.As(err, &de) {
			for _, d := range de.Details {
				pr.Add("flow."+d.Field, "%s", d.Message)
			}
		} else {
			pr.Add("flow", "%v", err)
		}
	}
	if p.WorkQueue != "" && !domain.ValidName(p.WorkQueue) {
		pr.Add("work_queue", "must be 1 to 100 letters, digits, '_', '.' or '-', starting with a letter or digit")
	}
	if len(p.IdempotencyKey) > 200 {
		pr.Add("idempotency_key", "must be at most 200 characters")
	}
	return pr.Err()
}

// taskJob is the job that works the given attempt of a task of run, due at
// `at` (queued at once when that is not after now).
func taskJob(run domain.FlowRun, task string, attempt int, at, now time.Time) riverjob.Job {
	t, _ := run.Flow.Task(task)
	return jobFor(run, t, attempt, at, now)
}

// jobFor is taskJob for a task whose spec the caller has at hand (looking
// it up by name scans the flow).
func jobFor(run domain.FlowRun, t domain.TaskSpec, attempt int, at, now time.Time) riverjob.Job {
	task := t.Name
	queue := run.WorkQueue
	if t.WorkQueue != "" {
		queue = t.WorkQueue
	}
	j := riverjob.Job{
		Args:  riverjob.TaskRunArgs{TaskRunID: run.TaskRunIDs[task], FlowRunID: run.ID, Attempt: attempt},
		Queue: queue,
	}
	if at.After(now) {
		j.ScheduledAt = at
	}
	return j
}

// claimIdempotencyKey records the actor's key for a new run, or returns the
// run that already holds it. A concurrent create with the same key waits
// for this transaction and then finds its run.
func claimIdempotencyKey(ctx context.Context, tx pgx.Tx, deployment uuid.UUID, actor, key string, id uuid.UUID) (uuid.UUID, bool, error) {
	var got uuid.UUID
	err := tx.QueryRow(ctx, `
INSERT INTO flow_run_idempotency_keys (deployment_id, actor, idempotency_key, flow_run_id) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING RETURNING flow_run_id`, deployment, actor, key, id).Scan(&got)
	if err == nil {
		return id, false, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, false, fmt.Errorf("claim idempotency key: %w", err)
	}
	err = tx.QueryRow(ctx, `
SELECT flow_run_id FROM flow_run_idempotency_keys WHERE deployment_id = $1 AND actor = $2 AND idempotency_key = $3`, deployment, actor, key).Scan(&got)
	if err != nil {
		return uuid.Nil, false, fmt.Errorf("read idempotency key: %w", err)
	}
	return got, true, nil
}

// readFlowRun folds a flow run's whole stream.
func readFlowRun(ctx context.Context, store *eventstore.Store, q eventstore.Querier, id uuid.UUID) (domain.FlowRun, error) {
	envs, err := store.ReadStream(ctx, q, id, 0)
	if err != nil {
		return domain.FlowRun{}, err
	}
	if len(envs) == 0 {
		return domain.FlowRun{}, domain.Errorf(domain.CodeNotFound, "flow run %s not found", id)
	}
	r := domain.FlowRun{ID: id}
	for _, e := range envs {
		r = r.Apply(e.Event, e.RecordedAt)
		r.Version = e.Version
	}
	return r, nil
}
