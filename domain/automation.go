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

// Trigger types of automations.
const (
	TriggerState               = "state"                // a flow run or task run reached a state
	TriggerRunningLongerThan   = "running_longer_than"  // a run has been RUNNING for Seconds, and still is
	TriggerNotCompletedWithin  = "not_completed_within" // a deployment had no COMPLETED flow run for Seconds
	TriggerNotStartedWithin    = "not_started_within"   // a flow run had not started Seconds after it was due
	TriggerConsecutiveFailures = "consecutive_failures" // Count flow runs of a deployment in a row ended FAILED or CRASHED
)

// maxTriggerSeconds bounds a trigger's window (a year).
const maxTriggerSeconds = 366 * 24 * 3600

// Action types of automations that are implemented.
const (
	ActionWebhook = "webhook" // POST a CloudEvents 1.0 JSON body, signed
)

var (
	triggerTypes = []string{TriggerState, TriggerRunningLongerThan, TriggerNotCompletedWithin, TriggerNotStartedWithin, TriggerConsecutiveFailures}
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
	Type    string   `json:"type"`              // one of the Trigger* kinds
	Of      string   `json:"of,omitempty"`      // state, running_longer_than: "flow_run" or "task_run"
	States  []string `json:"states,omitempty"`  // state: state types (FAILED) or named states (TimedOut)
	Seconds int      `json:"seconds,omitempty"` // running_longer_than, not_completed_within, not_started_within
	Count   int      `json:"count,omitempty"`   // consecutive_failures
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
	s.Trigger.validate(&p)
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

// validate names each bad field of the trigger: a kind's own fields are
// required, the other kinds' refused.
func (t AutomationTrigger) validate(p *Problems) {
	switch {
	case t.Type == "":
		p.Add("trigger.type", "is required (one of %s)", strings.Join(triggerTypes, ", "))
		return
	case !slices.Contains(triggerTypes, t.Type):
		p.Add("trigger.type", "unknown trigger type %q (one of %s)", t.Type, strings.Join(triggerTypes, ", "))
		return
	}
	hasOf := t.Type == TriggerState || t.Type == TriggerRunningLongerThan
	hasSeconds := t.Type == TriggerRunningLongerThan || t.Type == TriggerNotCompletedWithin || t.Type == TriggerNotStartedWithin
	if hasOf && !slices.Contains(triggerOfs, t.Of) {
		p.Add("trigger.of", "must be one of %s, not %q", strings.Join(triggerOfs, ", "), t.Of)
	} else if !hasOf && t.Of != "" {
		p.Add("trigger.of", "applies only to state and running_longer_than triggers (a %s trigger is about flow runs)", t.Type)
	}
	if t.Type == TriggerState {
		if len(t.States) == 0 {
			p.Add("trigger.states", "name at least one state type or named state")
		}
		for i, st := range t.States {
			if !StateType(st).Valid() && !slices.Contains(stateNames, st) {
				p.Add("trigger.states["+strconv.Itoa(i)+"]", "unknown state %q (a type such as FAILED or a named state such as TimedOut)", st)
			}
		}
	} else if len(t.States) > 0 {
		p.Add("trigger.states", "applies only to state triggers")
	}
	switch {
	case hasSeconds && t.Seconds <= 0:
		p.Add("trigger.seconds", "must be a positive number of seconds for a %s trigger", t.Type)
	case hasSeconds && t.Seconds > maxTriggerSeconds:
		p.Add("trigger.seconds", "must be at most %d (a year)", maxTriggerSeconds)
	case !hasSeconds && t.Seconds != 0:
		p.Add("trigger.seconds", "applies only to running_longer_than, not_completed_within and not_started_within triggers")
	}
	if t.Type == TriggerConsecutiveFailures && t.Count < 1 {
		p.Add("trigger.count", "must be at least 1 for a consecutive_failures trigger")
	} else if t.Type != TriggerConsecutiveFailures && t.Count != 0 {
		p.Add("trigger.count", "applies only to consecutive_failures triggers")
	}
}

// Window returns how long the trigger's absence window lasts.
func (t AutomationTrigger) Window() time.Duration { return time.Duration(t.Seconds) * time.Second }

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
	// For an absence trigger, TriggerPosition is the event that opened
	// the window (a run's start, a run's creation, a deployment's last
	// completion) and Window says when it opened and closed.
	AutomationFired struct {
		AutomationID    uuid.UUID     `json:"automation_id"`
		TriggerPosition int64         `json:"trigger_position,omitempty"`
		TriggerType     string        `json:"trigger_type"`      // the triggering event's type, "test" for a test firing
		Trigger         string        `json:"trigger,omitempty"` // the trigger's kind; empty in firings recorded before there were others
		FlowRunID       uuid.UUID     `json:"flow_run_id,omitzero"`
		TaskRunID       *uuid.UUID    `json:"task_run_id,omitempty"`
		State           State         `json:"state,omitzero"`
		Window          *FiringWindow `json:"window,omitempty"`
		Test            bool          `json:"test,omitempty"`
	}
)

// FiringWindow is what an absence or count trigger saw when it fired.
type FiringWindow struct {
	// Since is when the window opened: running since (running_longer_than),
	// due at (not_started_within), last completion or the automation's
	// creation (not_completed_within), first failure of the streak
	// (consecutive_failures).
	Since          time.Time `json:"since"`
	Deadline       time.Time `json:"deadline,omitzero"` // Since + Seconds: when it fired
	Seconds        int       `json:"seconds,omitempty"`
	Count          int       `json:"count,omitempty"` // consecutive_failures: failures in a row
	DeploymentID   uuid.UUID `json:"deployment_id,omitzero"`
	DeploymentName string    `json:"deployment_name,omitempty"`
}

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
	TriggerKind     string            `json:"trigger_kind"` // the automation's trigger type when it fired; "test" for a test firing
	Window          *FiringWindow     `json:"window"`       // absence and count triggers
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
