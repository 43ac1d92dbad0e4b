package projections

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
)

// State is a state as the API shows it.
type State struct {
	Type      domain.StateType `json:"type"`
	Name      string           `json:"name"`
	Timestamp time.Time        `json:"timestamp"`
	Message   string           `json:"message"`
}

func stateOf(s domain.State) State {
	return State{Type: s.Type, Name: s.Name, Timestamp: s.Timestamp, Message: s.Message}
}

// NextRun is a scheduled run of a deployment.
type NextRun struct {
	ID          uuid.UUID `json:"id"`
	ScheduledAt time.Time `json:"scheduled_at"`
}

// Deployment is a deployment as the API shows it.
type Deployment struct {
	ID          uuid.UUID             `json:"id"`
	Name        string                `json:"name"`
	Version     int                   `json:"version"`
	Description string                `json:"description"`
	WorkQueue   string                `json:"work_queue"`
	Tags        []string              `json:"tags"`
	Parameters  map[string]any        `json:"parameters"`
	Schedule    *domain.Schedule      `json:"schedule"`
	Paused      bool                  `json:"paused"`
	Flow        domain.FlowSpec       `json:"flow"`
	Spec        domain.DeploymentSpec `json:"spec"`
	NextRuns    []NextRun             `json:"next_runs"`
	CreatedAt   time.Time             `json:"created_at"`
	UpdatedAt   time.Time             `json:"updated_at"`
}

// DeploymentOf shows a deployment folded by the write side, before the read
// model has it (next_runs is then empty).
func DeploymentOf(d domain.Deployment) Deployment {
	s := d.Spec
	return Deployment{
		ID: d.ID, Name: s.Name, Version: d.Version, Description: s.Description, WorkQueue: s.WorkQueue,
		Tags: nonNil(s.Tags), Parameters: nonNilMap(s.Parameters), Schedule: s.Schedule, Paused: d.Paused,
		Flow: s.Flow, Spec: s, NextRuns: []NextRun{}, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
	}
}

// FlowRun is a flow run as the API shows it. TaskRuns is set only for one
// run (GET /runs/{id}).
type FlowRun struct {
	ID                uuid.UUID       `json:"id"`
	Name              string          `json:"name"`
	FlowName          string          `json:"flow_name"`
	DeploymentID      uuid.UUID       `json:"deployment_id"`
	DeploymentName    string          `json:"deployment_name"`
	DeploymentVersion int             `json:"deployment_version"`
	WorkQueue         string          `json:"work_queue"`
	Tags              []string        `json:"tags"`
	Parameters        json.RawMessage `json:"parameters"`
	State             State           `json:"state"`
	ScheduledAt       time.Time       `json:"scheduled_at"`
	StartedAt         *time.Time      `json:"started_at"`
	EndedAt           *time.Time      `json:"ended_at"`
	RunCount          int             `json:"run_count"`
	ParentTaskRunID   *uuid.UUID      `json:"parent_task_run_id"`
	ParentFlowRunID   *uuid.UUID      `json:"parent_flow_run_id"`
	AutoScheduled     bool            `json:"auto_scheduled"`
	Result            json.RawMessage `json:"result"`
	Metrics           json.RawMessage `json:"metrics"` // the union of its task runs' metrics
	TaskCount         int             `json:"task_count"`
	CreatedAt         time.Time       `json:"created_at"`
	UpdatedAt         time.Time       `json:"updated_at"`
	TaskRuns          []TaskRun       `json:"task_runs,omitempty"`
}

// TaskRun is a task run as the API shows it.
type TaskRun struct {
	ID             uuid.UUID          `json:"id"`
	FlowRunID      uuid.UUID          `json:"flow_run_id"`
	TaskName       string             `json:"task_name"`
	Kind           string             `json:"kind"`
	State          State              `json:"state"`
	RunCount       int                `json:"run_count"`
	StartedAt      *time.Time         `json:"started_at"`
	EndedAt        *time.Time         `json:"ended_at"`
	RetryAt        *time.Time         `json:"retry_at"`
	Result         json.RawMessage    `json:"result"`
	Outputs        []domain.Output    `json:"outputs"`
	Metrics        map[string]float64 `json:"metrics"`
	Error          *string            `json:"error"`
	ExitCode       *int               `json:"exit_code"`
	CacheKey       *string            `json:"cache_key"`
	DependsOn      []string           `json:"depends_on"`
	Tags           []string           `json:"tags"`
	ChildFlowRunID *uuid.UUID         `json:"child_flow_run_id"`
	CreatedAt      time.Time          `json:"created_at"`
	UpdatedAt      time.Time          `json:"updated_at"`
}

// Graph is a flow run's tasks and their dependencies.
type Graph struct {
	FlowRunID uuid.UUID   `json:"flow_run_id"`
	Nodes     []GraphNode `json:"nodes"`
	Edges     []GraphEdge `json:"edges"`
}

// GraphNode is one task run of a graph.
type GraphNode struct {
	ID        uuid.UUID  `json:"id"`
	TaskName  string     `json:"task_name"`
	Kind      string     `json:"kind"`
	State     State      `json:"state"`
	RunCount  int        `json:"run_count"`
	StartedAt *time.Time `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at"`
}

// GraphEdge says that task run To waits for task run From.
type GraphEdge struct {
	From     uuid.UUID `json:"from"`
	To       uuid.UUID `json:"to"`
	FromTask string    `json:"from_task"`
	ToTask   string    `json:"to_task"`
}

// Event is one event of the log as the API shows it. FromState and ToState
// are set in a run's audit trail: the state of its stream before and after
// (equal for an event that changes no state).
type Event struct {
	Position      int64           `json:"position"`
	TransactionID uint64          `json:"transaction_id,string"`
	Cursor        string          `json:"cursor"`
	StreamID      uuid.UUID       `json:"stream_id"`
	StreamType    string          `json:"stream_type"`
	Version       int64           `json:"version"`
	Type          string          `json:"type"`
	Data          json.RawMessage `json:"data"`
	Metadata      Metadata        `json:"metadata"`
	RecordedAt    time.Time       `json:"recorded_at"`
	// For events of flow runs and task runs: the run, the task, and the
	// state of the stream before and after the event.
	FlowRunID   *uuid.UUID `json:"flow_run_id,omitempty"`
	FlowRunName string     `json:"flow_run_name,omitempty"`
	TaskName    string     `json:"task_name,omitempty"`
	FromState   *State     `json:"from_state,omitempty"`
	ToState     *State     `json:"to_state,omitempty"`
}

// Metadata says who caused an event and why; every key is always present.
type Metadata struct {
	Actor         string `json:"actor"`
	Reason        string `json:"reason"`
	CausationID   string `json:"causation_id"`
	CorrelationID string `json:"correlation_id"`
}

// Page is one page of a list; NextCursor is nil on the last page.
type Page[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

// History is a flow run as it was at a past point of the log.
type History struct {
	At         time.Time `json:"at"`          // recorded_at of the last event folded
	Position   int64     `json:"position"`    // position of the last event folded
	Cursor     string    `json:"cursor"`      // checkpoint of the last event folded
	EventCount int       `json:"event_count"` // events folded
	Run        FlowRun   `json:"run"`
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func nonNilMetrics(m map[string]float64) map[string]float64 {
	if m == nil {
		return map[string]float64{}
	}
	return m
}

func nonNilMap(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}
