package commands

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/riverjob"
)

// Sub-flows. A task with `deployment: NAME` starts a run of that
// deployment's current version when its attempt starts, in the same
// transaction as its TaskRunStarted (which names the child run), and its
// job completes at once: no worker slot waits for the child. The child run
// is a run of the deployment like any other: under the deployment's
// concurrency limit it may wait for a slot (and the parent task with it),
// or be cancelled by policy cancel_new, which fails the parent attempt with
// that reason at once. When the child run ends, the transaction that ends it
// queues a job for the parent task run (riverjob.TaskRunArgs.ChildFlowRunID set),
// which settles the parent attempt with the child's result or failure.

// startChild starts a sub-flow task's attempt: it creates the child run.
// A deployment that does not exist, or parameters it refuses, fail the
// attempt (and its retries may find the deployment later).
func (r *Attempts) startChild(ctx context.Context, tx pgx.Tx, s *settlement, plan Plan, markStarted func() error, meta domain.Metadata) (*StartResult, error) {
	dep, err := findDeployment(ctx, tx, r.store, plan.Task.Deployment)
	params := domain.MergeParameters(dep.Spec.Parameters, plan.Task.Parameters)
	if err == nil {
		err = dep.Spec.CheckParameters(params)
	}
	if err != nil {
		switch domain.ErrorCode(err) {
		case domain.CodeNotFound, domain.CodeInvalid:
		default:
			return nil, err
		}
		// Start the attempt and fail it: the failure is recorded with the
		// task's retry policy like any other.
		if _, err := s.u.decideTaskRun(plan.TaskRunID, domain.StartTaskRun{Attempt: plan.Attempt, Worker: r.opts.Worker}, meta); err != nil {
			return nil, err
		}
		if err := markStarted(); err != nil {
			return nil, err
		}
		plan.Fail = &domain.AttemptFailure{Attempt: plan.Attempt, Error: "start sub-flow: " + err.Error()}
		return &StartResult{Action: ActionRun, Plan: plan}, nil
	}
	childID, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("new flow run id: %w", err)
	}
	start := domain.StartTaskRun{Attempt: plan.Attempt, Worker: r.opts.Worker, ChildFlowRunID: &childID}
	if _, err := s.u.decideTaskRun(plan.TaskRunID, start, meta); err != nil {
		return nil, err
	}
	if err := markStarted(); err != nil {
		return nil, err
	}
	child, err := startDeploymentRunTx(ctx, tx, r.store, r.enq, dep, RunCreateParams{Parameters: params, Actor: meta.Actor},
		runIdentity{id: childID, parentTaskRunID: &plan.TaskRunID, parentFlowRunID: &plan.FlowRunID})
	if err != nil {
		return nil, fmt.Errorf("start sub-flow run of %s: %w", dep.Spec.Name, err)
	}
	if child.State.Type == domain.Cancelled {
		// Cancelled as it was created, by policy cancel_new. Its end is not
		// reported to this attempt, which is only being started: fail it
		// here.
		plan.Fail = &domain.AttemptFailure{Attempt: plan.Attempt, Error: cancelledChild(child, ReasonConcurrencyLimit)}
		return &StartResult{Action: ActionRun, Plan: plan}, nil
	}
	return &StartResult{Action: ActionDone, Reason: "started sub-flow run " + childID.String()}, nil
}

// childOutcome is the command that settles a sub-flow task's attempt once
// its child run ended: complete with the child's result, fail when it
// failed, crashed or was cancelled (cancelled, when the parent run is being
// cancelled itself).
func childOutcome(s *settlement, fr domain.FlowRun, tr domain.TaskRun, a riverjob.TaskRunArgs, child domain.FlowRun) (domain.TaskRunCommand, error) {
	attempt := a.Attempt
	fail := func(format string, args ...any) domain.TaskRunCommand {
		f := domain.AttemptFailure{Attempt: attempt, Error: fmt.Sprintf(format, args...)}
		return domain.FailTaskRun{AttemptFailure: f, Now: s.now, Random: rand.Float64()}
	}
	switch child.State.Type {
	case domain.Completed:
		cmd := domain.CompleteTaskRun{Attempt: attempt, Result: child.Result}
		if tr.Task.Cache != nil {
			inputs, files := inputsOf(s.u, fr, tr)
			cmd.CacheKey, _ = domain.CacheKey(tr.Task, domain.MergeParameters(fr.Parameters, tr.Task.Parameters), keyInputs(inputs, files))
		}
		return cmd, nil
	case domain.Failed, domain.Crashed:
		return fail("sub-flow run %s (%s) ended %s: %s", child.Name, child.ID, child.State.Type, child.State.Message), nil
	case domain.Cancelled:
		current := tr.State.Type == domain.Running && tr.Attempt == attempt
		if fr.State.Type == domain.Cancelling && current {
			return domain.CancelTaskRun{}, nil
		}
		return fail("%s", cancelledChild(child, a.ChildCancelReason)), nil
	}
	return nil, nil // not ended: nothing to settle yet
}

// cancelledChild is the error of a sub-flow task whose child run was
// cancelled, with the reason when it is known.
func cancelledChild(child domain.FlowRun, reason string) string {
	msg := fmt.Sprintf("sub-flow run %s (%s) was cancelled", child.Name, child.ID)
	if reason != "" {
		msg += ": " + reason
	}
	return msg
}

// reportCancelledChildrenTx queues, for the sub-flow runs among ids that
// were just cancelled for reason before any task of theirs started (while
// waiting for a concurrency slot), the job that settles their parent task's
// attempt: what a settlement does for runs that end otherwise. A parent
// attempt that is not running that child any more is left alone.
func reportCancelledChildrenTx(ctx context.Context, tx pgx.Tx, store *eventstore.Store, enq Enqueuer, ids []uuid.UUID, reason string, now time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	runs, err := readFlowRuns(ctx, store, tx, ids)
	if err != nil {
		return err
	}
	var (
		children             []domain.FlowRun
		parents, parentTasks []uuid.UUID
	)
	for _, id := range ids {
		if c := runs[id]; c.ParentTaskRunID != nil && c.ParentFlowRunID != nil {
			children = append(children, c)
			if !slices.Contains(parents, *c.ParentFlowRunID) {
				parents = append(parents, *c.ParentFlowRunID)
			}
			parentTasks = append(parentTasks, *c.ParentTaskRunID)
		}
	}
	if len(children) == 0 {
		return nil
	}
	parentRuns, err := readFlowRuns(ctx, store, tx, parents)
	if err != nil {
		return err
	}
	u := newUnitOfWork(store)
	if err := u.loadTaskRuns(ctx, tx, parentTasks); err != nil {
		return err
	}
	var jobs []riverjob.Job
	for _, c := range children {
		tr := u.taskRun(*c.ParentTaskRunID)
		if tr.State.Type != domain.Running || tr.ChildFlowRunID == nil || *tr.ChildFlowRunID != c.ID {
			continue
		}
		job := jobFor(parentRuns[*c.ParentFlowRunID], tr.Task, tr.Attempt, now, now)
		job.Args.ChildFlowRunID, job.Args.ChildCancelReason = c.ID, reason
		jobs = append(jobs, job)
	}
	if len(jobs) == 0 {
		return nil
	}
	if err := enq.EnqueueTx(ctx, tx, jobs); err != nil {
		return fmt.Errorf("report cancelled sub-flow runs to their parents: %w", err)
	}
	return nil
}

// findDeployment returns the live deployment named name, folded from its
// stream; the name -> id lookup is the deployments' write-side table.
func findDeployment(ctx context.Context, q eventstore.Querier, store *eventstore.Store, name string) (domain.Deployment, error) {
	var id uuid.UUID
	err := q.QueryRow(ctx, `SELECT deployment_id FROM deployment_names WHERE name = $1`, name).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.Deployment{}, domain.Errorf(domain.CodeNotFound, "deployment %q not found", name)
	}
	if err != nil {
		return domain.Deployment{}, fmt.Errorf("look up deployment %q: %w", name, err)
	}
	envs, err := store.ReadStream(ctx, q, id, 0)
	if err != nil {
		return domain.Deployment{}, err
	}
	d := domain.Deployment{ID: id}
	for _, env := range envs {
		d = d.Apply(env.Event, env.RecordedAt)
		d.Stream = env.Version
	}
	if d.Stream == 0 || d.Deleted {
		return domain.Deployment{}, domain.Errorf(domain.CodeNotFound, "deployment %q not found", name)
	}
	return d, nil
}
