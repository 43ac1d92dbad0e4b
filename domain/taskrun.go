package domain

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// TaskRun is a task run's state, folded from its stream.
type TaskRun struct {
	ID             uuid.UUID
	FlowRunID      uuid.UUID
	Task           TaskSpec
	State          State
	Attempt        int // attempts started so far (run_count); the current one when running
	Interruptions  int // attempts handed back by a worker shutting down; they do not use up retries
	Version        int64
	Result         json.RawMessage
	CacheKey       string
	Outputs        []Output           // of the attempt that completed it, or of its cache source
	Metrics        map[string]float64 // likewise
	LastFailure    *AttemptFailure
	RetryAt        time.Time
	ChildFlowRunID *uuid.UUID
	StartedAt      *time.Time
	EndedAt        *time.Time
}

// Task run commands: what a worker, the scheduler or a user asks of a task run.
type (
	// StartTaskRun starts the next attempt (Attempt must be the one after
	// the last started).
	StartTaskRun struct {
		Attempt        int
		Worker         string
		ChildFlowRunID *uuid.UUID
	}
	// CompleteTaskRun reports that an attempt succeeded.
	CompleteTaskRun struct {
		Attempt  int
		Result   json.RawMessage
		CacheKey string
		Outputs  []Output
		Metrics  map[string]float64
	}
	// FailTaskRun reports that an attempt failed, timed out or crashed. Now
	// and Random (in [0,1), for jitter) make the retry decision pure.
	FailTaskRun struct {
		AttemptFailure
		Now    time.Time
		Random float64
	}
	// UseCachedResult completes a pending task run from a cached result.
	UseCachedResult struct {
		Result          json.RawMessage
		CacheKey        string
		SourceTaskRunID uuid.UUID
		Outputs         []Output
		Metrics         map[string]float64
	}
	// CancelTaskRun stops a task run; NotRun says it never ran because an
	// upstream task did not complete.
	CancelTaskRun struct{ NotRun bool }
	// ResetTaskRun sends a finished, unsuccessful task run back to pending
	// for a retry of its flow run.
	ResetTaskRun struct{}
)

// TaskRunCommand is one of the task run commands above.
type TaskRunCommand interface{ isTaskRunCommand() }

func (StartTaskRun) isTaskRunCommand()    {}
func (CompleteTaskRun) isTaskRunCommand() {}
func (FailTaskRun) isTaskRunCommand()     {}
func (UseCachedResult) isTaskRunCommand() {}
func (CancelTaskRun) isTaskRunCommand()   {}
func (ResetTaskRun) isTaskRunCommand()    {}

// DecideTaskRun returns the events that cmd causes on t, or a typed error.
// A result for an attempt that is not the current running one is not an
// error: it yields a TaskRunResultRefused event, so that it is recorded but
// changes nothing. A command with nothing left to do yields no events.
func DecideTaskRun(t TaskRun, cmd TaskRunCommand) ([]Event, error) {
	if t.State.IsZero() {
		return nil, Errorf(CodeNotFound, "task run %s not found", t.ID)
	}
	switch c := cmd.(type) {
	case StartTaskRun:
		if t.State.Type != Pending && t.State.Type != Scheduled {
			return nil, Errorf(CodeConflict, "task run %s is %s: it cannot start", t.ID, t.State.Type)
		}
		if c.Attempt != t.Attempt+1 {
			return nil, Errorf(CodeConflict, "task run %s: attempt %d cannot start after attempt %d", t.ID, c.Attempt, t.Attempt)
		}
		return []Event{TaskRunStarted{Attempt: c.Attempt, Worker: c.Worker, ChildFlowRunID: c.ChildFlowRunID}}, nil
	case CompleteTaskRun:
		if refused := t.refuseStale(c.Attempt, "completed"); refused != nil {
			return refused, nil
		}
		if err := ValidateOutputs(c.Outputs); err != nil {
			return nil, Errorf(CodeInvalid, "task run %s: %v", t.ID, err)
		}
		if err := ValidateMetrics(c.Metrics); err != nil {
			return nil, Errorf(CodeInvalid, "task run %s: %v", t.ID, err)
		}
		return []Event{TaskRunCompleted{Attempt: c.Attempt, Result: c.Result, CacheKey: c.CacheKey, Outputs: c.Outputs, Metrics: c.Metrics}}, nil
	case FailTaskRun:
		outcome := "failed"
		if c.Crashed {
			outcome = "crashed"
		}
		if refused := t.refuseStale(c.Attempt, outcome); refused != nil {
			return refused, nil
		}
		if c.Interrupted {
			return []Event{TaskRunRetryScheduled{AttemptFailure: c.AttemptFailure, RetryAt: c.Now}}, nil
		}
		if failures := c.Attempt - t.Interruptions; failures <= t.Task.Retries {
			delay := t.Task.RetryDelay(failures, c.Random)
			return []Event{TaskRunRetryScheduled{AttemptFailure: c.AttemptFailure, RetryAt: c.Now.Add(delay)}}, nil
		}
		return []Event{TaskRunFailed{AttemptFailure: c.AttemptFailure}}, nil
	case UseCachedResult:
		if t.State.Type != Pending {
			return nil, Errorf(CodeConflict, "task run %s is %s: a cached result applies only to a pending task run", t.ID, t.State.Type)
		}
		return []Event{TaskRunCached{Result: c.Result, CacheKey: c.CacheKey, SourceTaskRunID: c.SourceTaskRunID, Outputs: c.Outputs, Metrics: c.Metrics}}, nil
	case CancelTaskRun:
		if t.State.Type.Terminal() {
			return nil, nil
		}
		return []Event{TaskRunCancelled{NotRun: c.NotRun}}, nil
	case ResetTaskRun:
		switch t.State.Type {
		case Failed, Crashed, Cancelled:
			return []Event{TaskRunReset{}}, nil
		case Completed:
			return nil, nil
		}
		return nil, Errorf(CodeConflict, "task run %s is %s: only a failed, crashed or cancelled task run can run again", t.ID, t.State.Type)
	}
	return nil, Errorf(CodeInternal, "unknown task run command %T", cmd)
}

// refuseStale returns a refusal when attempt is not the current running one.
func (t TaskRun) refuseStale(attempt int, outcome string) []Event {
	if t.State.Type == Running && attempt == t.Attempt {
		return nil
	}
	return []Event{TaskRunResultRefused{Attempt: attempt, CurrentAttempt: t.Attempt, Outcome: outcome}}
}

// timeAt returns a new pointer to t. Apply stores times through it: taking
// the address of its at parameter put every event's time on the heap, also
// for the many events that store none.
func timeAt(t time.Time) *time.Time { return &t }

// Apply folds one event into the task run's state. at is when the event was
// recorded.
func (t TaskRun) Apply(e Event, at time.Time) TaskRun {
	set := func(typ StateType, name, msg string) {
		t.State = State{Type: typ, Name: name, Timestamp: at, Message: msg}
	}
	switch e := e.(type) {
	case TaskRunCreated:
		t.FlowRunID, t.Task = e.FlowRunID, e.Task
		set(Pending, NamePending, "")
	case TaskRunStarted:
		t.Attempt = e.Attempt
		t.ChildFlowRunID = e.ChildFlowRunID
		t.EndedAt = nil
		if t.StartedAt == nil {
			t.StartedAt = timeAt(at)
		}
		if e.Attempt > 1 {
			set(Running, NameRetrying, "attempt "+strconv.Itoa(e.Attempt))
		} else {
			set(Running, NameRunning, "")
		}
	case TaskRunCompleted:
		t.Result, t.CacheKey, t.LastFailure = e.Result, e.CacheKey, nil
		t.Outputs, t.Metrics = e.Outputs, e.Metrics
		t.EndedAt = timeAt(at)
		set(Completed, NameCompleted, "")
	case TaskRunCached:
		t.Result, t.CacheKey = e.Result, e.CacheKey
		t.Outputs, t.Metrics = e.Outputs, e.Metrics
		t.EndedAt = timeAt(at)
		set(Completed, NameCached, "result from task run "+e.SourceTaskRunID.String())
	case TaskRunRetryScheduled:
		f := e.AttemptFailure
		t.LastFailure, t.RetryAt = &f, e.RetryAt
		if f.Interrupted {
			t.Interruptions++
		}
		set(Scheduled, NameAwaitingRetry, "attempt "+strconv.Itoa(f.Attempt)+" "+f.outcome()+": "+f.Error)
	case TaskRunFailed:
		f := e.AttemptFailure
		t.LastFailure = &f
		t.EndedAt = timeAt(at)
		switch {
		case f.Crashed:
			set(Crashed, NameCrashed, f.Error)
		case f.TimedOut:
			set(Failed, NameTimedOut, f.Error)
		default:
			set(Failed, NameFailed, f.Error)
		}
	case TaskRunCancelled:
		t.EndedAt = timeAt(at)
		if e.NotRun {
			set(Cancelled, NameNotRun, "an upstream task did not complete")
		} else {
			set(Cancelled, NameCancelled, "")
		}
	case TaskRunReset:
		t.EndedAt, t.LastFailure, t.Result = nil, nil, nil
		t.Outputs, t.Metrics = nil, nil
		set(Pending, NamePending, "the flow run was retried")
	case TaskRunResultRefused:
		// recorded for the audit trail; changes nothing
	}
	return t
}

// TargetState returns the state type an event moves a task run to, and
// false for events that change no state.
func taskRunTarget(e Event, before TaskRun) (StateType, bool) {
	if _, ok := e.(TaskRunResultRefused); ok {
		return "", false
	}
	return before.Apply(e, time.Time{}).State.Type, true
}

func (f AttemptFailure) outcome() string {
	switch {
	case f.Interrupted:
		return "was handed back by its worker"
	case f.Crashed:
		return "crashed"
	case f.TimedOut:
		return "timed out"
	}
	return "failed"
}
