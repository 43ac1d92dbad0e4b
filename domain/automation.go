package domain

import (
	"encoding/json"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Stream types of automations: an automation's own stream (what users did
// to it), and one stream per firing, whose id is derived from the
// automation and the triggering event, so that the log's unique (stream,
// version) makes a second recording of one firing impossible.
const (
	StreamAutomation       = "automation"
	StreamAutomationFiring = "automation_firing"
)

// Trigger types of automations that are implemented.
const (
	TriggerState = "state" // a flow run or task run reached a state
)

// Action types of automations that are implemented.
const (
	ActionWebhook = "webhook" // POST a CloudEvents 1.0 JSON body, signed
)

var (
	triggerTypes = []string{TriggerState}
	actionTypes  = []string{ActionWebhook, ActionSlack, ActionEmail, ActionCancelRun, ActionPauseDeployment, ActionRunDeployment}
	triggerOfs   = []string{StreamFlowRun, StreamTaskRun}
	stateNames   = []string{NameScheduled, NameLate, NameAwaitingRetry, NamePending, NameRunning, NameRetrying,
		NameCompleted, NameCached, NameFailed, NameTimedOut, NameCancelling, NameCancelled, NameNotRun, NameCrashed, NamePaused}
	envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// AutomationSpec is what a user saves: when it fires (Trigger), for which
// runs (Filter) and what it does then (Actions).
type AutomationSpec struct {
	Name        string             `json:"name"`
	Description string             `json:"description,omitempty"`
	Trigger     AutomationTrigger  `json:"trigger"`
	Filter      AutomationFilter   `json:"filter,omitzero"`
	Actions     []AutomationAction `json:"actions"`
}

// AutomationTrigger says which events fire an automation.
type AutomationTrigger struct {
	Type   string   `json:"type"`             // "state"
	Of     string   `json:"of,omitempty"`     // "flow_run" or "task_run"
	States []string `json:"states,omitempty"` // state types (FAILED) or named states (TimedOut)
}

// AutomationFilter narrows the runs an automation fires for; empty fields
// keep every run.
type AutomationFilter struct {
	Deployments []string `json:"deployments,omitempty"` // deployment names, with path.Match globs
	Tags        []string `json:"tags,omitempty"`        // the run has at least one of them
	WorkQueue   string   `json:"work_queue,omitempty"`
	Flow        string   `json:"flow,omitempty"` // the flow's name
}

// Validate checks the spec and names each bad field.
func (s AutomationSpec) Validate() error {
	var p Problems
	p.Message = "invalid automation"
	if strings.TrimSpace(s.Name) == "" {
		p.Add("name", "is required")
	} else if len(s.Name) > 200 {
		p.Add("name", "is longer than 200 characters")
	}
	t := s.Trigger
	switch {
	case t.Type == "":
		p.Add("trigger.type", "is required (one of %s)", strings.Join(triggerTypes, ", "))
	case !slices.Contains(triggerTypes, t.Type):
		p.Add("trigger.type", "unknown trigger type %q (one of %s)", t.Type, strings.Join(triggerTypes, ", "))
	case t.Type == TriggerState:
		if !slices.Contains(triggerOfs, t.Of) {
			p.Add("trigger.of", "must be one of %s, not %q", strings.Join(triggerOfs, ", "), t.Of)
		}
		if len(t.States) == 0 {
			p.Add("trigger.states", "name at least one state type or named state")
		}
		for i, st := range t.States {
			if !StateType(st).Valid() && !slices.Contains(stateNames, st) {
				p.Add("trigger.states["+strconv.Itoa(i)+"]", "unknown state %q (a type such as FAILED or a named state such as TimedOut)", st)
			}
		}
	}
	for i, g := range s.Filter.Deployments {
		if _, err := path.Match(g, ""); err != nil || g == "" {
			p.Add("filter.deployments["+strconv.Itoa(i)+"]", "%q is not a valid glob", g)
		}
	}
	if len(s.Actions) == 0 {
		p.Add("actions", "name at least one action")
	}
	for i, a := range s.Actions {
		a.validate("actions["+strconv.Itoa(i)+"]", &p)
	}
	return p.Err()
}

// MatchesState reports whether a state reached fires the trigger: its
// type or its name is one of the trigger's states.
func (t AutomationTrigger) MatchesState(s State) bool {
	return slices.Contains(t.States, string(s.Type)) || s.Name != "" && slices.Contains(t.States, s.Name)
}

// RunContext is what a filter looks at: the flow run an event belongs to.
type RunContext struct {
	FlowRunID      uuid.UUID
	DeploymentName string
	Tags           []string
	WorkQueue      string
	Flow           string
}

// Matches reports whether the run passes the filter.
func (f AutomationFilter) Matches(rc RunContext) bool {
	if len(f.Deployments) > 0 && !slices.ContainsFunc(f.Deployments, func(g string) bool {
		ok, _ := path.Match(g, rc.DeploymentName)
		return ok
	}) {
		return false
	}
	if len(f.Tags) > 0 && !slices.ContainsFunc(f.Tags, func(t string) bool { return slices.Contains(rc.Tags, t) }) {
		return false
	}
	if f.WorkQueue != "" && f.WorkQueue != rc.WorkQueue {
		return false
	}
	return f.Flow == "" || f.Flow == rc.Flow
}

// FiringID is the stream id of an automation's firing for the event at
// position: the same whoever records it, so that it is recorded once. It
// is also the idempotency key a receiver gets.
func FiringID(automationID uuid.UUID, position int64) uuid.UUID {
	return uuid.NewSHA1(automationID, []byte("fired:"+strconv.FormatInt(position, 10)))
}

// Automation events.
type (
	// AutomationCreated: an automation was saved for the first time.
	AutomationCreated struct {
		Spec AutomationSpec `json:"spec"`
	}
	// AutomationChanged: its spec was replaced; Changed names the fields.
	AutomationChanged struct {
		Spec    AutomationSpec `json:"spec"`
		Changed []string       `json:"changed"`
	}
	// AutomationPaused: it stopped firing.
	AutomationPaused struct{}
	// AutomationResumed: it fires again (for events after this one).
	AutomationResumed struct{}
	// AutomationDeleted: it is gone; its firings and deliveries stay.
	AutomationDeleted struct{}
	// AutomationFired: the automation matched the event at
	// TriggerPosition (0 for a test firing), on the firing's own stream.
	AutomationFired struct {
		AutomationID    uuid.UUID  `json:"automation_id"`
		TriggerPosition int64      `json:"trigger_position,omitempty"`
		TriggerType     string     `json:"trigger_type"` // the triggering event's type, "test" for a test firing
		FlowRunID       uuid.UUID  `json:"flow_run_id,omitzero"`
		TaskRunID       *uuid.UUID `json:"task_run_id,omitempty"`
		State           State      `json:"state,omitzero"`
		Test            bool       `json:"test,omitempty"`
	}
)

func (AutomationCreated) EventType() string  { return "AutomationCreated" }
func (AutomationChanged) EventType() string  { return "AutomationChanged" }
func (AutomationPaused) EventType() string   { return "AutomationPaused" }
func (AutomationResumed) EventType() string  { return "AutomationResumed" }
func (AutomationDeleted) EventType() string  { return "AutomationDeleted" }
func (AutomationFired) EventType() string    { return "AutomationFired" }
func (AutomationCreated) StreamType() string { return StreamAutomation }
func (AutomationChanged) StreamType() string { return StreamAutomation }
func (AutomationPaused) StreamType() string  { return StreamAutomation }
func (AutomationResumed) StreamType() string { return StreamAutomation }
func (AutomationDeleted) StreamType() string { return StreamAutomation }
func (AutomationFired) StreamType() string   { return StreamAutomationFiring }

// Automation is an automation's state, folded from its stream.
type Automation struct {
	ID        uuid.UUID
	Spec      AutomationSpec
	Paused    bool
	Deleted   bool
	Stream    int64 // stream version, for optimistic concurrency
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Automation commands.
type (
	// SaveAutomation creates the automation or replaces its spec.
	SaveAutomation struct{ Spec AutomationSpec }
	// PauseAutomation stops its firing.
	PauseAutomation struct{}
	// ResumeAutomation starts it firing again.
	ResumeAutomation struct{}
	// DeleteAutomation removes it.
	DeleteAutomation struct{}
)

// AutomationCommand is one of the automation commands above.
type AutomationCommand interface{ isAutomationCommand() }

func (SaveAutomation) isAutomationCommand()   {}
func (PauseAutomation) isAutomationCommand()  {}
func (ResumeAutomation) isAutomationCommand() {}
func (DeleteAutomation) isAutomationCommand() {}

// DecideAutomation returns the events cmd causes on a.
func DecideAutomation(a Automation, cmd AutomationCommand) ([]Event, error) {
	if a.Deleted || a.Stream == 0 {
		save, ok := cmd.(SaveAutomation)
		if !ok || a.Deleted {
			return nil, Errorf(CodeNotFound, "automation %s not found", a.ID)
		}
		if err := save.Spec.Validate(); err != nil {
			return nil, err
		}
		return []Event{AutomationCreated{Spec: save.Spec}}, nil
	}
	switch cmd := cmd.(type) {
	case SaveAutomation:
		if err := cmd.Spec.Validate(); err != nil {
			return nil, err
		}
		changed := changedJSONFields(a.Spec, cmd.Spec)
		if len(changed) == 0 {
			return nil, nil
		}
		return []Event{AutomationChanged{Spec: cmd.Spec, Changed: changed}}, nil
	case PauseAutomation:
		if a.Paused {
			return nil, nil
		}
		return []Event{AutomationPaused{}}, nil
	case ResumeAutomation:
		if !a.Paused {
			return nil, nil
		}
		return []Event{AutomationResumed{}}, nil
	case DeleteAutomation:
		return []Event{AutomationDeleted{}}, nil
	}
	return nil, Errorf(CodeInternal, "unknown automation command %T", cmd)
}

// Apply folds one event into the automation's state.
func (a Automation) Apply(e Event, at time.Time) Automation {
	a.UpdatedAt = at
	switch e := e.(type) {
	case AutomationCreated:
		a.Spec, a.CreatedAt = e.Spec, at
	case AutomationChanged:
		a.Spec = e.Spec
	case AutomationPaused:
		a.Paused = true
	case AutomationResumed:
		a.Paused = false
	case AutomationDeleted:
		a.Deleted = true
	}
	return a
}

// StateReached returns the state a flow run or task run event puts its run
// in, and false for an event that changes no state.
func StateReached(e Event, at time.Time) (State, bool) {
	switch e.StreamType() {
	case StreamFlowRun:
		return FlowRun{}.Apply(e, at).State, true
	case StreamTaskRun:
		if _, refused := e.(TaskRunResultRefused); refused {
			return State{}, false
		}
		return TaskRun{}.Apply(e, at).State, true
	}
	return State{}, false
}

// Delivery is where one action of one firing stands.
type Delivery struct {
	FiringID        uuid.UUID         `json:"firing_id"` // also the idempotency key
	Action          int               `json:"action"`
	ActionType      string            `json:"action_type"`
	Target          string            `json:"target"`
	Status          string            `json:"status"` // pending, delivered or dead
	Attempts        int               `json:"attempts"`
	LastStatusCode  *int              `json:"last_status_code"`
	LastError       *string           `json:"last_error"`
	TriggerPosition *int64            `json:"trigger_position"` // null for a test firing
	TriggerType     string            `json:"trigger_type"`
	FlowRunID       *uuid.UUID        `json:"flow_run_id"`
	TaskRunID       *uuid.UUID        `json:"task_run_id"`
	CreatedAt       time.Time         `json:"created_at"`
	UpdatedAt       time.Time         `json:"updated_at"`
	AttemptList     []DeliveryAttempt `json:"attempt_list"`
}

// DeliveryAttempt is one try of a delivery.
type DeliveryAttempt struct {
	Attempt    int       `json:"attempt"`
	StatusCode *int      `json:"status_code"`
	LatencyMS  float64   `json:"latency_ms"`
	Error      *string   `json:"error"`
	At         time.Time `json:"at"`
}

// ParseAutomation reads an automation spec from JSON, refusing unknown
// fields by name, and validates it.
func ParseAutomation(data []byte) (AutomationSpec, error) {
	if err := checkDocument(data, "automation", reflect.TypeFor[AutomationSpec]()); err != nil {
		return AutomationSpec{}, err
	}
	var s AutomationSpec
	if err := json.Unmarshal(data, &s); err != nil {
		return AutomationSpec{}, Errorf(CodeInvalid, "invalid automation: %v", err)
	}
	return s, s.Validate()
}
