package jobs

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// Sub-flows. A task with `deployment: NAME` starts a run of that
// deployment's current version when its attempt starts, in the same
// transaction as its TaskRunStarted (which names the child run), and its
// job completes at once: no worker slot waits for the child. When the child
// run ends, the transaction that ends it queues a job for the parent task
// run (TaskRunArgs.ChildFlowRunID set), which settles the parent attempt
// with the child's result or failure.

// startChild starts a sub-flow task's attempt: it creates the child run.
// A deployment that does not exist, or parameters it refuses, fail the
// attempt (and its retries may find the deployment later).
func (w *Worker) startChild(ctx context.Context, tx pgx.Tx, s *settlement, plan execPlan, markStarted func() error, meta domain.Metadata) (*startResult, error) {
	dep, err := findDeployment(ctx, tx, w.store, plan.task.Deployment)
	params := domain.MergeParameters(dep.Spec.Parameters, plan.task.Parameters)
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
		if _, err := s.u.decideTaskRun(plan.taskRunID, domain.StartTaskRun{Attempt: plan.attempt, Worker: w.opts.Name}, meta); err != nil {
			return nil, err
		}
		if err := markStarted(); err != nil {
			return nil, err
		}
		plan.fail = &domain.AttemptFailure{Attempt: plan.attempt, Error: "start sub-flow: " + err.Error()}
		return &startResult{action: actionRun, plan: plan}, nil
	}
	childID, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("new flow run id: %w", err)
	}
	start := domain.StartTaskRun{Attempt: plan.attempt, Worker: w.opts.Name, ChildFlowRunID: &childID}
	if _, err := s.u.decideTaskRun(plan.taskRunID, start, meta); err != nil {
		return nil, err
	}
	if err := markStarted(); err != nil {
		return nil, err
	}
	_, err = createRun(ctx, tx, w.store, w.client, RunCreateParams{
		DeploymentID: dep.ID, DeploymentName: dep.Spec.Name, DeploymentVersion: dep.Version,
		WorkQueue: dep.Spec.WorkQueue, Tags: dep.Spec.Tags, Parameters: params, Flow: dep.Spec.Flow,
		Actor: meta.Actor,
	}, runIdentity{id: childID, parentTaskRunID: &plan.taskRunID, parentFlowRunID: &plan.flowRunID})
	if err != nil {
		return nil, fmt.Errorf("start sub-flow run of %s: %w", dep.Spec.Name, err)
	}
	return &startResult{action: actionDone, reason: "started sub-flow run " + childID.String()}, nil
}

// childOutcome is the command that settles a sub-flow task's attempt once
// its child run ended: complete with the child's result, fail when it
// failed, crashed or was cancelled (cancelled, when the parent run is being
// cancelled itself).
func childOutcome(s *settlement, fr domain.FlowRun, tr domain.TaskRun, attempt int, child domain.FlowRun) (domain.TaskRunCommand, error) {
	fail := func(format string, args ...any) domain.TaskRunCommand {
		f := domain.AttemptFailure{Attempt: attempt, Error: fmt.Sprintf(format, args...)}
		return domain.FailTaskRun{AttemptFailure: f, Now: s.now, Random: rand.Float64()}
	}
	switch child.State.Type {
	case domain.Completed:
		cmd := domain.CompleteTaskRun{Attempt: attempt, Result: child.Result}
		if tr.Task.Cache != nil {
			cmd.CacheKey, _ = domain.CacheKey(tr.Task, domain.MergeParameters(fr.Parameters, tr.Task.Parameters), inputsOf(s.u, fr, tr))
		}
		return cmd, nil
	case domain.Failed, domain.Crashed:
		return fail("sub-flow run %s (%s) ended %s: %s", child.Name, child.ID, child.State.Type, child.State.Message), nil
	case domain.Cancelled:
		current := tr.State.Type == domain.Running && tr.Attempt == attempt
		if fr.State.Type == domain.Cancelling && current {
			return domain.CancelTaskRun{}, nil
		}
		return fail("sub-flow run %s (%s) was cancelled", child.Name, child.ID), nil
	}
	return nil, nil // not ended: nothing to settle yet
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
