package notify

import (
	"net/url"
	"strings"
	"time"
)

// Context is everything a message template may name, as {{.FlowRun.Name}}
// and so on. Times are UTC and zero when not known (a run not yet ended);
// TaskRun is zero unless a task run triggered the firing.
type Context struct {
	Automation     Automation
	Trigger        Trigger
	FiredAt        time.Time // when the firing was recorded
	IdempotencyKey string    // the same on every retry of one firing
	FlowRun        FlowRun
	TaskRun        TaskRun
	RunURL         string // the run's page in the UI; empty without a public base URL
}

// Automation names the automation that fired.
type Automation struct {
	ID   string
	Name string
}

// Trigger is what made the automation fire.
type Trigger struct {
	Kind        string // state, running_longer_than, not_completed_within, consecutive_failures
	Description string // one line, e.g. "flow run reached FAILED"
}

// State is a run's state as the API shows it.
type State struct {
	Type    string // COMPLETED, FAILED, RUNNING, ...
	Name    string // Completed, Failed, Retrying, Late, ...
	Message string
}

// FlowRun is the run the firing is about.
type FlowRun struct {
	ID             string
	Name           string
	DeploymentName string
	WorkQueue      string
	Tags           []string
	State          State
	StartedAt      time.Time
	EndedAt        time.Time
	Parameters     map[string]any
}

// TaskRun is the task run of a task-run trigger.
type TaskRun struct {
	ID       string
	TaskName string
	State    State
	Error    string
	Attempt  int
}

// RunURL is the link to a flow run's page in the UI served under base (the
// server's public URL); empty when base is.
func RunURL(base, runID string) string {
	if base == "" || runID == "" {
		return ""
	}
	return strings.TrimRight(base, "/") + "/runs/" + url.PathEscape(runID)
}

// Sample is the Context templates are checked against when an automation
// is saved, and what a test-fire without a run may send.
func Sample() Context {
	started := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	return Context{
		Automation:     Automation{ID: "0191e7a8-0000-7000-8000-0000000000a1", Name: "ml failures to ops"},
		Trigger:        Trigger{Kind: "state", Description: "flow run reached FAILED"},
		FiredAt:        started.Add(5 * time.Minute),
		IdempotencyKey: "0191e7a8-0000-7000-8000-0000000000a1:1234",
		FlowRun: FlowRun{
			ID:             "0191e7a8-0000-7000-8000-000000000001",
			Name:           "clever-heron",
			DeploymentName: "model_training_validation",
			WorkQueue:      "ml",
			Tags:           []string{"prod"},
			State:          State{Type: "FAILED", Name: "Failed", Message: "task train failed: ValueError: empty table"},
			StartedAt:      started,
			EndedAt:        started.Add(4 * time.Minute),
			Parameters:     map[string]any{"table": "houses", "test_size": 0.2},
		},
		TaskRun: TaskRun{
			ID:       "0191e7a8-0000-7000-8000-000000000002",
			TaskName: "train",
			State:    State{Type: "FAILED", Name: "Failed", Message: "ValueError: empty table"},
			Error:    "ValueError: empty table",
			Attempt:  3,
		},
		RunURL: RunURL("http://127.0.0.1:4200", "0191e7a8-0000-7000-8000-000000000001"),
	}
}
