package domain

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Stream types: the kinds of entity that own a stream of events.
const (
	StreamDeployment = "deployment"
	StreamFlowRun    = "flow_run"
	StreamTaskRun    = "task_run"
)

// Event is the payload of one thing that happened. Its type name is stored
// with it; payloads are small structs with snake_case JSON.
type Event interface {
	EventType() string
	StreamType() string
}

// Metadata says who caused an event and why.
type Metadata struct {
	Actor         string `json:"actor,omitempty"`          // "token:NAME", "worker:ID", "scheduler", "cli", "system"
	Reason        string `json:"reason,omitempty"`         // why, in words
	CausationID   string `json:"causation_id,omitempty"`   // the event or request that caused this one
	CorrelationID string `json:"correlation_id,omitempty"` // groups the events of one flow run tree
}

// Envelope is a stored event: its payload with where and when it was
// recorded. Data holds the payload as stored; Event is it decoded.
type Envelope struct {
	Position      int64           `json:"position"`
	TransactionID uint64          `json:"-"`
	StreamID      uuid.UUID       `json:"stream_id"`
	StreamType    string          `json:"stream_type"`
	Version       int64           `json:"version"`
	Type          string          `json:"type"`
	Data          json.RawMessage `json:"data"`
	Metadata      Metadata        `json:"metadata"`
	RecordedAt    time.Time       `json:"recorded_at"`
	Event         Event           `json:"-"`
}

// Deployment events.
type (
	// DeploymentCreated: a deployment was created at version 1.
	DeploymentCreated struct {
		Spec DeploymentSpec `json:"spec"`
	}
	// DeploymentUpdated: a deployment got a new version of its spec.
	DeploymentUpdated struct {
		Spec    DeploymentSpec `json:"spec"`
		Version int            `json:"version"`
		Changed []string       `json:"changed"`
	}
	// DeploymentPaused: its schedule stopped creating runs.
	DeploymentPaused struct{}
	// DeploymentResumed: its schedule creates runs again.
	DeploymentResumed struct{}
	// DeploymentDeleted: the deployment is gone; its finished runs stay.
	DeploymentDeleted struct{}
)

// Flow run events.
type (
	// FlowRunCreated: a run was created, due at ScheduledAt, with one task
	// run per task (TaskRunIDs, by task name).
	FlowRunCreated struct {
		Name              string         `json:"name"`
		DeploymentID      uuid.UUID      `json:"deployment_id"`
		DeploymentName    string         `json:"deployment_name"`
		DeploymentVersion int            `json:"deployment_version"`
		WorkQueue         string         `json:"work_queue"`
		Tags              []string       `json:"tags"`
		Parameters        map[string]any `json:"parameters"`
		Flow              FlowSpec       `json:"flow"`
		TaskRunIDs        TaskRunIDs     `json:"task_run_ids"`
		ScheduledAt       time.Time      `json:"scheduled_at"`
		ParentTaskRunID   *uuid.UUID     `json:"parent_task_run_id,omitempty"`
		ParentFlowRunID   *uuid.UUID     `json:"parent_flow_run_id,omitempty"`
		AutoScheduled     bool           `json:"auto_scheduled,omitempty"`
	}
	// FlowRunLate: the run was due and had not started within the threshold.
	FlowRunLate struct{}
	// FlowRunPending: the run became due and its root tasks were queued.
	FlowRunPending struct{}
	// FlowRunStarted: its first task started running.
	FlowRunStarted struct{}
	// FlowRunCompleted: every task run completed.
	FlowRunCompleted struct {
		Result json.RawMessage `json:"result,omitempty"`
	}
	// FlowRunFailed: a task run failed for good.
	FlowRunFailed struct {
		Message string `json:"message"`
	}
	// FlowRunCrashed: a task run crashed for good, or the run could not go on.
	FlowRunCrashed struct {
		Message string `json:"message"`
	}
	// FlowRunCancelling: cancellation was asked; running tasks are being stopped.
	FlowRunCancelling struct{}
	// FlowRunCancelled: the run ended by cancellation.
	FlowRunCancelled struct{}
	// FlowRunRetried: a user retried a finished run: its failed part runs again.
	FlowRunRetried struct {
		TaskNames []string `json:"task_names"`
	}
)

// Task run events.
type (
	// TaskRunCreated: a task run was created with its flow run.
	TaskRunCreated struct {
		FlowRunID uuid.UUID `json:"flow_run_id"`
		Task      TaskSpec  `json:"task"`
	}
	// TaskRunStarted: an attempt started running on a worker.
	TaskRunStarted struct {
		Attempt        int        `json:"attempt"`
		Worker         string     `json:"worker,omitempty"`
		ChildFlowRunID *uuid.UUID `json:"child_flow_run_id,omitempty"`
	}
	// TaskRunCompleted: the current attempt succeeded with Result.
	TaskRunCompleted struct {
		Attempt  int                `json:"attempt"`
		Result   json.RawMessage    `json:"result,omitempty"`
		CacheKey string             `json:"cache_key,omitempty"`
		Outputs  []Output           `json:"outputs,omitempty"` // files stored in the blob store
		Metrics  map[string]float64 `json:"metrics,omitempty"`
	}
	// TaskRunCached: a cached result was used; nothing ran.
	TaskRunCached struct {
		Result          json.RawMessage    `json:"result,omitempty"`
		CacheKey        string             `json:"cache_key"`
		SourceTaskRunID uuid.UUID          `json:"source_task_run_id"`
		Outputs         []Output           `json:"outputs,omitempty"` // the source's, by digest: nothing is copied
		Metrics         map[string]float64 `json:"metrics,omitempty"`
	}
	// TaskRunRetryScheduled: the current attempt failed and another one
	// will start at RetryAt.
	TaskRunRetryScheduled struct {
		AttemptFailure
		RetryAt time.Time `json:"retry_at"`
	}
	// TaskRunFailed: the current attempt failed and no retry is left.
	TaskRunFailed struct {
		AttemptFailure
	}
	// TaskRunCancelled: the task run was stopped or never ran (NotRun).
	TaskRunCancelled struct {
		NotRun bool `json:"not_run,omitempty"`
	}
	// TaskRunReset: a retry of the flow run sends the task run back to
	// pending; its attempt count goes on.
	TaskRunReset struct{}
	// TaskRunResultRefused: a result arrived for an attempt that is no
	// longer current (a worker that came back after being declared dead).
	// It is recorded and not applied.
	TaskRunResultRefused struct {
		Attempt        int    `json:"attempt"`
		CurrentAttempt int    `json:"current_attempt"`
		Outcome        string `json:"outcome"`
	}
)

// AttemptFailure describes how one attempt failed.
type AttemptFailure struct {
	Attempt  int      `json:"attempt"`
	Error    string   `json:"error"`
	ExitCode *int     `json:"exit_code,omitempty"`
	LogTail  []string `json:"log_tail,omitempty"`
	TimedOut bool     `json:"timed_out,omitempty"`
	Crashed  bool     `json:"crashed,omitempty"` // the worker died or lost contact
	// Interrupted: the worker was shut down before the attempt ended and
	// handed it back. It runs again at once and does not count against
	// the task's retries.
	Interrupted bool `json:"interrupted,omitempty"`
}

func (DeploymentCreated) EventType() string     { return "DeploymentCreated" }
func (DeploymentUpdated) EventType() string     { return "DeploymentUpdated" }
func (DeploymentPaused) EventType() string      { return "DeploymentPaused" }
func (DeploymentResumed) EventType() string     { return "DeploymentResumed" }
func (DeploymentDeleted) EventType() string     { return "DeploymentDeleted" }
func (FlowRunCreated) EventType() string        { return "FlowRunCreated" }
func (FlowRunLate) EventType() string           { return "FlowRunLate" }
func (FlowRunPending) EventType() string        { return "FlowRunPending" }
func (FlowRunStarted) EventType() string        { return "FlowRunStarted" }
func (FlowRunCompleted) EventType() string      { return "FlowRunCompleted" }
func (FlowRunFailed) EventType() string         { return "FlowRunFailed" }
func (FlowRunCrashed) EventType() string        { return "FlowRunCrashed" }
func (FlowRunCancelling) EventType() string     { return "FlowRunCancelling" }
func (FlowRunCancelled) EventType() string      { return "FlowRunCancelled" }
func (FlowRunRetried) EventType() string        { return "FlowRunRetried" }
func (TaskRunCreated) EventType() string        { return "TaskRunCreated" }
func (TaskRunStarted) EventType() string        { return "TaskRunStarted" }
func (TaskRunCompleted) EventType() string      { return "TaskRunCompleted" }
func (TaskRunCached) EventType() string         { return "TaskRunCached" }
func (TaskRunRetryScheduled) EventType() string { return "TaskRunRetryScheduled" }
func (TaskRunFailed) EventType() string         { return "TaskRunFailed" }
func (TaskRunCancelled) EventType() string      { return "TaskRunCancelled" }
func (TaskRunReset) EventType() string          { return "TaskRunReset" }
func (TaskRunResultRefused) EventType() string  { return "TaskRunResultRefused" }

func (DeploymentCreated) StreamType() string     { return StreamDeployment }
func (DeploymentUpdated) StreamType() string     { return StreamDeployment }
func (DeploymentPaused) StreamType() string      { return StreamDeployment }
func (DeploymentResumed) StreamType() string     { return StreamDeployment }
func (DeploymentDeleted) StreamType() string     { return StreamDeployment }
func (FlowRunCreated) StreamType() string        { return StreamFlowRun }
func (FlowRunLate) StreamType() string           { return StreamFlowRun }
func (FlowRunPending) StreamType() string        { return StreamFlowRun }
func (FlowRunStarted) StreamType() string        { return StreamFlowRun }
func (FlowRunCompleted) StreamType() string      { return StreamFlowRun }
func (FlowRunFailed) StreamType() string         { return StreamFlowRun }
func (FlowRunCrashed) StreamType() string        { return StreamFlowRun }
func (FlowRunCancelling) StreamType() string     { return StreamFlowRun }
func (FlowRunCancelled) StreamType() string      { return StreamFlowRun }
func (FlowRunRetried) StreamType() string        { return StreamFlowRun }
func (TaskRunCreated) StreamType() string        { return StreamTaskRun }
func (TaskRunStarted) StreamType() string        { return StreamTaskRun }
func (TaskRunCompleted) StreamType() string      { return StreamTaskRun }
func (TaskRunCached) StreamType() string         { return StreamTaskRun }
func (TaskRunRetryScheduled) StreamType() string { return StreamTaskRun }
func (TaskRunFailed) StreamType() string         { return StreamTaskRun }
func (TaskRunCancelled) StreamType() string      { return StreamTaskRun }
func (TaskRunReset) StreamType() string          { return StreamTaskRun }
func (TaskRunResultRefused) StreamType() string  { return StreamTaskRun }

// Registry maps stored event type names to their payload types, so that
// readers can decode what they read. It is a value, built by NewRegistry
// and passed to whoever decodes.
type Registry struct {
	decoders map[string]func([]byte) (Event, error)
	flows    flowSpecs
}

// NewRegistry returns a registry of every event type Ordo records.
func NewRegistry() *Registry {
	r := &Registry{decoders: map[string]func([]byte) (Event, error){}}
	register[DeploymentCreated](r)
	register[DeploymentUpdated](r)
	register[DeploymentPaused](r)
	register[DeploymentResumed](r)
	register[DeploymentDeleted](r)
	register[FlowRunCreated](r)
	register[FlowRunLate](r)
	register[FlowRunPending](r)
	register[FlowRunStarted](r)
	register[FlowRunCompleted](r)
	register[FlowRunFailed](r)
	register[FlowRunCrashed](r)
	register[FlowRunCancelling](r)
	register[FlowRunCancelled](r)
	register[FlowRunRetried](r)
	register[TaskRunCreated](r)
	register[TaskRunStarted](r)
	register[TaskRunCompleted](r)
	register[TaskRunCached](r)
	register[TaskRunRetryScheduled](r)
	register[TaskRunFailed](r)
	register[TaskRunCancelled](r)
	register[TaskRunReset](r)
	register[TaskRunResultRefused](r)
	register[AutomationCreated](r)
	register[AutomationChanged](r)
	register[AutomationPaused](r)
	register[AutomationResumed](r)
	register[AutomationDeleted](r)
	register[AutomationFired](r)
	register[EventsArchived](r)
	register[BlobsDeleted](r)
	r.decoders[FlowRunCreated{}.EventType()] = r.decodeFlowRunCreated
	return r
}

func register[E Event](r *Registry) {
	var zero E
	r.decoders[zero.EventType()] = func(data []byte) (Event, error) {
		var e E
		if len(data) > 0 {
			if err := json.Unmarshal(data, &e); err != nil {
				return nil, err
			}
		}
		return e, nil
	}
}

// Types returns the names of every registered event type.
func (r *Registry) Types() []string {
	names := make([]string, 0, len(r.decoders))
	for n := range r.decoders {
		names = append(names, n)
	}
	return names
}

// Decode turns a stored payload of the named type into its event.
func (r *Registry) Decode(eventType string, data []byte) (Event, error) {
	dec, ok := r.decoders[eventType]
	if !ok {
		return nil, fmt.Errorf("unknown event type %q", eventType)
	}
	e, err := dec(data)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", eventType, err)
	}
	return e, nil
}

// DecodeEnvelope fills env.Event from env.Type and env.Data, and checks that
// the event belongs to the envelope's stream type.
func (r *Registry) DecodeEnvelope(env *Envelope) error {
	e, err := r.Decode(env.Type, env.Data)
	if err != nil {
		return err
	}
	if e.StreamType() != env.StreamType {
		return fmt.Errorf("event %s at position %d belongs to %s streams, not %s", env.Type, env.Position, e.StreamType(), env.StreamType)
	}
	env.Event = e
	return nil
}
