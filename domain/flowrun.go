package domain

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// FlowRun is a flow run's state, folded from its stream.
type FlowRun struct {
	ID                uuid.UUID
	Version           int64
	State             State
	Name              string
	DeploymentID      uuid.UUID
	DeploymentName    string
	DeploymentVersion int
	WorkQueue         string
	Tags              []string
	Parameters        map[string]any
	Flow              FlowSpec
	TaskRunIDs        TaskRunIDs
	ScheduledAt       time.Time
	ParentTaskRunID   *uuid.UUID
	ParentFlowRunID   *uuid.UUID
	AutoScheduled     bool
	RunCount          int
	StartedAt         *time.Time
	EndedAt           *time.Time
	Result            json.RawMessage
}

// Flow run commands.
type (
	// CreateFlowRun records a new run.
	CreateFlowRun struct{ FlowRunCreated }
	// MarkFlowRunLate records that a due run has not started in time.
	MarkFlowRunLate struct{}
	// MarkFlowRunPending records that a due run's root tasks were queued.
	MarkFlowRunPending struct{}
	// MarkFlowRunStarted records that the run's first task started.
	MarkFlowRunStarted struct{}
	// FinishFlowRun ends the run in Outcome (COMPLETED, FAILED, CRASHED or
	// CANCELLED). A run being cancelled always ends CANCELLED.
	FinishFlowRun struct {
		Outcome StateType
		Message string
		Result  json.RawMessage
	}
	// CancelFlowRun asks for the run to stop.
	CancelFlowRun struct{}
	// RetryFlowRun runs the failed part of a finished run again.
	RetryFlowRun struct{ TaskNames []string }
)

// FlowRunCommand is one of the flow run commands above.
type FlowRunCommand interface{ isFlowRunCommand() }

func (CreateFlowRun) isFlowRunCommand()      {}
func (MarkFlowRunLate) isFlowRunCommand()    {}
func (MarkFlowRunPending) isFlowRunCommand() {}
func (MarkFlowRunStarted) isFlowRunCommand() {}
func (FinishFlowRun) isFlowRunCommand()      {}
func (CancelFlowRun) isFlowRunCommand()      {}
func (RetryFlowRun) isFlowRunCommand()       {}

// DecideFlowRun returns the events that cmd causes on r, or a typed error.
// Commands that have already happened yield no events, so callers may repeat
// them safely.
func DecideFlowRun(r FlowRun, cmd FlowRunCommand) ([]Event, error) {
	if _, creating := cmd.(CreateFlowRun); !creating && r.State.IsZero() {
		return nil, Errorf(CodeNotFound, "flow run %s not found", r.ID)
	}
	switch c := cmd.(type) {
	case CreateFlowRun:
		if !r.State.IsZero() {
			return nil, Errorf(CodeConflict, "flow run %s already exists", r.ID)
		}
		if len(c.TaskRunIDs) != len(c.Flow.Tasks) {
			return nil, Errorf(CodeInvalid, "flow run needs one task run id per task")
		}
		return []Event{c.FlowRunCreated}, nil
	case MarkFlowRunLate:
		if r.State.Type == Scheduled && r.State.Name != NameLate {
			return []Event{FlowRunLate{}}, nil
		}
		return nil, nil
	case MarkFlowRunPending:
		if r.State.Type == Scheduled {
			return []Event{FlowRunPending{}}, nil
		}
		return nil, nil
	case MarkFlowRunStarted:
		switch r.State.Type {
		case Scheduled, Pending, Paused:
			return []Event{FlowRunStarted{}}, nil
		}
		return nil, nil
	case FinishFlowRun:
		if r.State.Type.Terminal() {
			return nil, nil
		}
		outcome := c.Outcome
		if r.State.Type == Cancelling {
			outcome = Cancelled
		}
		switch outcome {
		case Completed:
			if r.State.Type == Scheduled {
				// every task came from the cache before the run was picked up
				return []Event{FlowRunPending{}, FlowRunCompleted{Result: c.Result}}, nil
			}
			return []Event{FlowRunCompleted{Result: c.Result}}, nil
		case Failed:
			return []Event{FlowRunFailed{Message: c.Message}}, nil
		case Crashed:
			if r.State.Type == Scheduled {
				return []Event{FlowRunFailed{Message: c.Message}}, nil
			}
			return []Event{FlowRunCrashed{Message: c.Message}}, nil
		case Cancelled:
			return []Event{FlowRunCancelled{}}, nil
		}
		return nil, Errorf(CodeInvalid, "a flow run cannot finish as %s", c.Outcome)
	case CancelFlowRun:
		switch {
		case r.State.Type == Cancelling:
			return nil, nil
		case r.State.Type.Terminal():
			return nil, Errorf(CodeConflict, "flow run %s is already %s", r.ID, r.State.Type)
		}
		return []Event{FlowRunCancelling{}}, nil
	case RetryFlowRun:
		switch r.State.Type {
		case Failed, Crashed, Cancelled:
			return []Event{FlowRunRetried{TaskNames: c.TaskNames}}, nil
		}
		return nil, Errorf(CodeConflict, "flow run %s is %s: only a failed, crashed or cancelled run can be retried", r.ID, r.State.Type)
	}
	return nil, Errorf(CodeInternal, "unknown flow run command %T", cmd)
}

// Apply folds one event into the flow run's state. at is when the event was
// recorded.
func (r FlowRun) Apply(e Event, at time.Time) FlowRun {
	set := func(typ StateType, name, msg string) {
		r.State = State{Type: typ, Name: name, Timestamp: at, Message: msg}
	}
	switch e := e.(type) {
	case FlowRunCreated:
		r.Name, r.DeploymentID, r.DeploymentName, r.DeploymentVersion = e.Name, e.DeploymentID, e.DeploymentName, e.DeploymentVersion
		r.WorkQueue, r.Tags, r.Parameters, r.Flow = e.WorkQueue, e.Tags, e.Parameters, e.Flow
		r.TaskRunIDs, r.ScheduledAt = e.TaskRunIDs, e.ScheduledAt
		r.ParentTaskRunID, r.ParentFlowRunID, r.AutoScheduled = e.ParentTaskRunID, e.ParentFlowRunID, e.AutoScheduled
		set(Scheduled, NameScheduled, "")
	case FlowRunLate:
		set(Scheduled, NameLate, "not started in time")
	case FlowRunPending:
		set(Pending, NamePending, "")
	case FlowRunStarted:
		r.RunCount++
		if r.StartedAt == nil {
			r.StartedAt = timeAt(at)
		}
		set(Running, NameRunning, "")
	case FlowRunCompleted:
		r.Result, r.EndedAt = e.Result, timeAt(at)
		set(Completed, NameCompleted, "")
	case FlowRunFailed:
		r.EndedAt = timeAt(at)
		set(Failed, NameFailed, e.Message)
	case FlowRunCrashed:
		r.EndedAt = timeAt(at)
		set(Crashed, NameCrashed, e.Message)
	case FlowRunCancelling:
		set(Cancelling, NameCancelling, "")
	case FlowRunCancelled:
		r.EndedAt = timeAt(at)
		set(Cancelled, NameCancelled, "")
	case FlowRunRetried:
		r.EndedAt, r.Result = nil, nil
		set(Scheduled, NameAwaitingRetry, "retried by a user")
	}
	return r
}
