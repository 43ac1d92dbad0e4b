package domain

import (
	"slices"
	"time"
)

// StateType is the coarse state of a flow run or task run.
type StateType string

const (
	Scheduled  StateType = "SCHEDULED"
	Pending    StateType = "PENDING"
	Running    StateType = "RUNNING"
	Completed  StateType = "COMPLETED"
	Failed     StateType = "FAILED"
	Cancelling StateType = "CANCELLING"
	Cancelled  StateType = "CANCELLED"
	Crashed    StateType = "CRASHED"
	Paused     StateType = "PAUSED"
)

// StateTypes lists every state type, in lifecycle order.
var StateTypes = []StateType{Scheduled, Pending, Running, Completed, Failed, Cancelling, Cancelled, Crashed, Paused}

// Terminal reports whether nothing more happens to a run in this state
// (unless a user retries it).
func (t StateType) Terminal() bool {
	return t == Completed || t == Failed || t == Cancelled || t == Crashed
}

// Valid reports whether t is one of the known state types.
func (t StateType) Valid() bool { return slices.Contains(StateTypes, t) }

// Named states refine a state type.
const (
	NameScheduled     = "Scheduled"
	NameLate          = "Late"          // SCHEDULED: due but not started within the lateness threshold
	NameAwaitingRetry = "AwaitingRetry" // SCHEDULED: an attempt failed, the next one waits for its delay
	NamePending       = "Pending"
	NameRunning       = "Running"
	NameRetrying      = "Retrying" // RUNNING: an attempt after the first
	NameCompleted     = "Completed"
	NameCached        = "Cached" // COMPLETED: result taken from the cache, nothing ran
	NameFailed        = "Failed"
	NameTimedOut      = "TimedOut" // FAILED: killed after timeout_seconds
	NameCancelling    = "Cancelling"
	NameCancelled     = "Cancelled"
	NameNotRun        = "NotRun" // CANCELLED: an upstream task did not complete, so this one never ran
	NameCrashed       = "Crashed"
	NamePaused        = "Paused"
)

// State is a state type with its name, when it was entered, and why.
type State struct {
	Type      StateType `json:"type"`
	Name      string    `json:"name"`
	Timestamp time.Time `json:"timestamp"`
	Message   string    `json:"message,omitempty"`
}

// IsZero reports whether s is the state of a stream with no events.
func (s State) IsZero() bool { return s.Type == "" }

// transitions is the one table of legal state changes, by stream kind. The
// empty state type is a stream with no events yet.
var transitions = map[string]map[StateType][]StateType{
	StreamFlowRun: {
		"":         {Scheduled},
		Scheduled:  {Scheduled, Pending, Running, Cancelling, Cancelled, Failed},
		Pending:    {Running, Completed, Failed, Cancelling, Cancelled, Crashed},
		Running:    {Completed, Failed, Cancelling, Cancelled, Crashed, Paused},
		Paused:     {Running, Cancelling, Cancelled},
		Cancelling: {Cancelled, Crashed},
		Failed:     {Scheduled}, // a user retries the run
		Crashed:    {Scheduled},
		Cancelled:  {Scheduled},
	},
	StreamTaskRun: {
		"":        {Pending},
		Pending:   {Running, Completed, Cancelled},
		Scheduled: {Running, Cancelled},
		Running:   {Completed, Failed, Crashed, Scheduled, Cancelled},
		Failed:    {Pending}, // the flow run is retried: the failed part runs again
		Crashed:   {Pending},
		Cancelled: {Pending},
	},
}

// CanTransition reports whether a stream of the given kind may go from one
// state type to another. from is "" for a new stream.
func CanTransition(streamType string, from, to StateType) bool {
	return slices.Contains(transitions[streamType][from], to)
}
