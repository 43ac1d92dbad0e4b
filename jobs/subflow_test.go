package jobs_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

// deploy saves a deployment of flow under name.
func (b testBundle) deploy(t *testing.T, name string, params map[string]any, tasks ...domain.TaskSpec) domain.Deployment {
	t.Helper()
	d, _, err := jobs.NewDeploymentCommands(b.store).DeploymentSave(t.Context(), domain.DeploymentSpec{
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
		waitUntil(t, 10*time.Second, "the child run starts", func() bool {
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
