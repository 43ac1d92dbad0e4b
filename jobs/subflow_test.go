package jobs_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

// deploy saves a deployment of flow under name.
func (b testBundle) deploy(t *testing.T, name string, params map[string]any, tasks ...domain.TaskSpec) domain.Deployment {
	t.Helper()
	d, _, err := commands.NewDeploymentCommands(b.store).DeploymentSave(t.Context(), domain.DeploymentSpec{
		Name: name, Parameters: params, Flow: domain.FlowSpec{Name: name + "-flow", Tasks: tasks},
	}, "token:test")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// child returns the sub-flow run a task run started (its last attempt).
func (b testBundle) child(t *testing.T, h taskHistory) domain.FlowRun {
	t.Helper()
	starts := h.of("TaskRunStarted")
	if len(starts) == 0 {
		t.Fatal("the sub-flow task never started")
	}
	id := starts[len(starts)-1].Event.(domain.TaskRunStarted).ChildFlowRunID
	if id == nil {
		t.Fatal("TaskRunStarted of a sub-flow task names no child run")
	}
	return b.flowRun(t, *id)
}

func subflowTask(name, deployment string, params map[string]any, deps ...string) domain.TaskSpec {
	return domain.TaskSpec{Name: name, Deployment: deployment, Parameters: params, DependsOn: deps}
}

func TestSubflows(t *testing.T) {
	t.Parallel()

	t.Run("CompletesWithChildResult", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{Concurrency: 4})
		dep := b.deploy(t, "child", map[string]any{"x": 0, "y": "default"},
			sh("c1", `printf '%s' "$ORDO_PARAMETERS" > "$ORDO_RESULT_PATH"`))
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "parent", Tasks: []domain.TaskSpec{
			sh("prep", "true"),
			subflowTask("sub", "child", map[string]any{"x": 1}, "prep"),
			sh("after", `printf '%s' "$ORDO_INPUTS" > "$ORDO_RESULT_PATH"`, "sub"),
		}}, nil).ID)
		if fr.State.Type != domain.Completed {
			t.Fatalf("parent ended %s (%s), want COMPLETED", fr.State.Type, fr.State.Message)
		}
		tasks := b.tasks(t, fr)
		child := b.child(t, tasks["sub"])
		if child.State.Type != domain.Completed || child.DeploymentID != dep.ID || child.DeploymentName != "child" {
			t.Errorf("child run %s of deployment %s (%s), want a COMPLETED run of child", child.State.Type, child.DeploymentName, child.DeploymentID)
		}
		if child.ParentTaskRunID == nil || *child.ParentTaskRunID != fr.TaskRunIDs["sub"] || child.ParentFlowRunID == nil || *child.ParentFlowRunID != fr.ID {
			t.Errorf("child links to task run %v of run %v, want %s of %s", child.ParentTaskRunID, child.ParentFlowRunID, fr.TaskRunIDs["sub"], fr.ID)
		}
		if got := compact(t, tasks["sub"].run.Result); got != `{"x":1,"y":"default"}` {
			t.Errorf("the sub-flow task's result %s, want the child's (its parameters merged)", got)
		}
		if got := compact(t, fr.Result); got != `{"sub":{"x":1,"y":"default"}}` {
			t.Errorf("after saw %s", got)
		}
		b.validate(t)
	})

	t.Run("ChildFailureFailsParent", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{})
		b.deploy(t, "broken", nil, sh("c", "echo nope; exit 2"))
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "parent", Tasks: []domain.TaskSpec{
			subflowTask("sub", "broken", nil), sh("after", "true", "sub"),
		}}, nil).ID)
		if fr.State.Type != domain.Failed || !strings.Contains(fr.State.Message, "task sub failed: sub-flow run") {
			t.Fatalf("parent ended %s (%q), want FAILED because of the sub-flow", fr.State.Type, fr.State.Message)
		}
		tasks := b.tasks(t, fr)
		if b.child(t, tasks["sub"]).State.Type != domain.Failed || tasks["after"].run.State.Name != domain.NameNotRun {
			t.Error("child not FAILED or downstream not NotRun")
		}
		b.validate(t)
	})

	t.Run("UnknownDeploymentFails", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{})
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "parent", Tasks: []domain.TaskSpec{subflowTask("sub", "nowhere", nil)}}, nil).ID)
		if fr.State.Type != domain.Failed || !strings.Contains(fr.State.Message, `deployment "nowhere" not found`) {
			t.Fatalf("parent ended %s (%q), want FAILED naming the deployment", fr.State.Type, fr.State.Message)
		}
		b.validate(t)
	})

	t.Run("CancelParentCancelsChild", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{Concurrency: 4})
		b.deploy(t, "slow", nil, sleeper("sleep"), sh("then", "true", "sleep"))
		fr := b.create(t, domain.FlowSpec{Name: "parent", Tasks: []domain.TaskSpec{subflowTask("sub", "slow", nil)}}, nil)
		var childID uuid.UUID
		waitUntil(t, time.Minute, "the child run starts", func() bool {
			h := b.taskEvents(t, fr, "sub")
			if len(h.of("TaskRunStarted")) == 0 {
				return false
			}
			childID = *h.of("TaskRunStarted")[0].Event.(domain.TaskRunStarted).ChildFlowRunID
			return true
		})
		pid := readPid(t, filepath.Join(b.workspace, childID.String(), "sleep.pid"))
		if _, err := b.svc.RunCancel(t.Context(), fr.ID, "token:test"); err != nil {
			t.Fatal(err)
		}
		fr = b.wait(t, fr.ID)
		child := b.wait(t, childID)
		if fr.State.Type != domain.Cancelled || child.State.Type != domain.Cancelled {
			t.Fatalf("parent %s and child %s, want both CANCELLED", fr.State.Type, child.State.Type)
		}
		waitGone(t, pid, 2*time.Second, "the child's task")
		if s := b.tasks(t, fr)["sub"].run.State; s.Type != domain.Cancelled {
			t.Errorf("the sub-flow task is %s, want CANCELLED", s.Type)
		}
		b.validate(t)
	})
}

// A sub-flow run is a run of its deployment like any other: it obeys the
// deployment's concurrency limit, and its parent task waits with it.
func TestSubflowConcurrencyLimit(t *testing.T) {
	t.Parallel()

	// setup makes a deployment limited to one run at a time (see
	// concurrencySetup), a run of it that holds the slot, and a parent run
	// whose task "sub" starts a run of it; it returns once that child run
	// exists.
	setup := func(t *testing.T, policy string) (schedBundle, domain.Deployment, chan struct{}, domain.FlowRun, domain.FlowRun, domain.FlowRun) {
		t.Helper()
		b, d, gate := concurrencySetup(t, policy)
		holder, err := b.runs.RunFromDeployment(t.Context(), d.ID, commands.RunRequest{Name: "holder"}, "token:test")
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, "the run holding the slot did not start", func() bool { return b.started(t, holder.ID) })
		parent := b.create(t, domain.FlowSpec{Name: "parent", Tasks: []domain.TaskSpec{
			subflowTask("sub", d.Spec.Name, nil), sh("after", "true", "sub"),
		}}, nil)
		eventually(t, time.Minute, "the sub-flow task did not start", func() bool {
			return len(b.taskEvents(t, parent, "sub").of("TaskRunStarted")) > 0
		})
		return b, d, gate, holder, parent, b.child(t, b.taskEvents(t, parent, "sub"))
	}
	slotState := func(t *testing.T, b schedBundle, id uuid.UUID) string {
		t.Helper()
		var state string
		err := b.pool.QueryRow(t.Context(), `SELECT coalesce((SELECT state FROM deployment_run_slots WHERE flow_run_id = $1), 'none')`, id).Scan(&state)
		if err != nil {
			t.Fatal(err)
		}
		return state
	}

	t.Run("ChildWaitsForASlot", func(t *testing.T) {
		t.Parallel()
		b, _, gate, holder, parent, child := setup(t, domain.ConcurrencyEnqueue)
		if child.State.Type != domain.Scheduled || slotState(t, b, child.ID) != "waiting" {
			t.Fatalf("the child run is %s with slot %s, want SCHEDULED and waiting", child.State.Type, slotState(t, b, child.ID))
		}
		if s := b.taskEvents(t, parent, "sub").run.State.Type; s != domain.Running {
			t.Fatalf("the sub-flow task is %s while its child waits, want RUNNING", s)
		}
		gate <- struct{}{} // the holder ends: the child gets the slot
		eventually(t, time.Minute, "the child did not start after the slot was freed", func() bool { return b.started(t, child.ID) })
		gate <- struct{}{}
		fr := b.wait(t, parent.ID)
		if fr.State.Type != domain.Completed {
			t.Fatalf("the parent ended %s (%s), want COMPLETED", fr.State.Type, fr.State.Message)
		}
		child, holder = b.flowRun(t, child.ID), b.flowRun(t, holder.ID)
		if child.StartedAt.Before(*holder.EndedAt) {
			t.Errorf("the child started at %v, before the run holding the slot ended at %v", child.StartedAt, holder.EndedAt)
		}
		if e, ok := b.lastEvent(t, child.ID, "FlowRunPending"); !ok || e.Metadata.Reason != commands.ReasonSlotFree {
			t.Errorf("the child was admitted with %+v", e.Metadata)
		}
		b.validate(t)
	})

	// Cancelled by policy cancel_new as it is created, or while it waits
	// (the policy changed meanwhile): the parent task fails with the reason.
	for _, tc := range []struct {
		name         string
		policy       string
		whileWaiting bool
	}{
		{"CancelNewFailsTheParentTask", domain.ConcurrencyCancelNew, false},
		{"WaitingChildCancelledByPolicy", domain.ConcurrencyEnqueue, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, d, gate, holder, parent, child := setup(t, tc.policy)
			if tc.whileWaiting {
				spec := d.Spec
				spec.ConcurrencyPolicy = domain.ConcurrencyCancelNew
				b.deploy(t, spec)
				tick(t, b.scheduler(t, jobs.SchedulerOptions{})) // admission: no slot, and now cancel_new
			}
			fr := b.wait(t, parent.ID)
			if fr.State.Type != domain.Failed || !strings.Contains(fr.State.Message, commands.ReasonConcurrencyLimit) {
				t.Fatalf("the parent ended %s (%q), want FAILED because of the concurrency limit", fr.State.Type, fr.State.Message)
			}
			b.assertCancelled(t, child, commands.ReasonConcurrencyLimit)
			sub := b.tasks(t, fr)["sub"].run
			if sub.State.Type != domain.Failed || !strings.Contains(sub.State.Message, "was cancelled: "+commands.ReasonConcurrencyLimit) {
				t.Errorf("the sub-flow task is %s (%q), want FAILED with the reason", sub.State.Type, sub.State.Message)
			}
			gate <- struct{}{}
			b.wait(t, holder.ID)
			b.validate(t)
		})
	}

	t.Run("CancelParentWhileChildWaits", func(t *testing.T) {
		t.Parallel()
		b, _, gate, holder, parent, child := setup(t, domain.ConcurrencyEnqueue)
		if _, err := b.svc.RunCancel(t.Context(), parent.ID, "token:test"); err != nil {
			t.Fatal(err)
		}
		fr, c := b.wait(t, parent.ID), b.wait(t, child.ID)
		if fr.State.Type != domain.Cancelled || c.State.Type != domain.Cancelled || slotState(t, b, child.ID) != "none" {
			t.Fatalf("parent %s, child %s with slot %s: want both CANCELLED and the slot gone", fr.State.Type, c.State.Type, slotState(t, b, child.ID))
		}
		gate <- struct{}{}
		b.wait(t, holder.ID)
		b.validate(t)
	})
}
