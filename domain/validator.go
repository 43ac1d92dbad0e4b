package domain

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/google/uuid"
)

// Violation is an event in the log that does not follow the rules.
type Violation struct {
	Position int64
	StreamID uuid.UUID
	Type     string
	Problem  string
}

func (v *Violation) Error() string {
	return fmt.Sprintf("event %d (%s on stream %s): %s", v.Position, v.Type, v.StreamID, v.Problem)
}

// LogValidator replays events in log order through the domain and reports
// the first one that is not a legal transition from the state before it.
// Streams whose first event lies before the replayed slice are followed but
// their transitions are not judged, since their earlier state is unknown.
//
// Each stream is judged in version order. A log written before appends kept
// each stream's versions in log order can hold an event before the version
// it follows: that event waits for it, and Finish reports any that waited
// in vain.
type LogValidator struct {
	reg       *Registry
	versions  map[uuid.UUID]int64
	early     map[uuid.UUID][]Envelope // events that came before the version they follow, by version
	partial   map[uuid.UUID]bool
	flowRuns  map[uuid.UUID]FlowRun
	taskRuns  map[uuid.UUID]TaskRun
	deploys   map[uuid.UUID]Deployment
	autos     map[uuid.UUID]Automation
	Checked   int // events judged
	Unchecked int // events of partial streams
}

// NewLogValidator returns a validator with no streams seen.
func NewLogValidator(reg *Registry) *LogValidator {
	return &LogValidator{
		reg:      reg,
		versions: map[uuid.UUID]int64{},
		early:    map[uuid.UUID][]Envelope{},
		partial:  map[uuid.UUID]bool{},
		flowRuns: map[uuid.UUID]FlowRun{},
		taskRuns: map[uuid.UUID]TaskRun{},
		deploys:  map[uuid.UUID]Deployment{},
		autos:    map[uuid.UUID]Automation{},
	}
}

// ValidateLog checks a slice of the log, in order.
func ValidateLog(reg *Registry, events []Envelope) error {
	v := NewLogValidator(reg)
	for i := range events {
		if err := v.Check(events[i]); err != nil {
			return err
		}
	}
	return v.Finish()
}

// Check judges the next event of the log.
func (v *LogValidator) Check(env Envelope) error {
	if env.Event == nil {
		if err := v.reg.DecodeEnvelope(&env); err != nil {
			return violation(env, "%v", err)
		}
	} else if env.Event.StreamType() != env.StreamType {
		return violation(env, "a %s event on a %s stream", env.Event.StreamType(), env.StreamType)
	}
	id := env.StreamID
	if last, seen := v.versions[id]; seen && env.Version > last+1 {
		early := append(v.early[id], env)
		slices.SortFunc(early, func(a, b Envelope) int { return cmp.Compare(a.Version, b.Version) })
		v.early[id] = early
		return nil
	}
	if err := v.judge(env); err != nil {
		return err
	}
	for early := v.early[id]; len(early) > 0 && early[0].Version == v.versions[id]+1; early = v.early[id] {
		if len(early) == 1 {
			delete(v.early, id)
		} else {
			v.early[id] = early[1:]
		}
		if err := v.judge(early[0]); err != nil {
			return err
		}
	}
	return nil
}

// Finish reports an event that came before the version it follows and is
// still waiting for it: a gap in the log.
func (v *LogValidator) Finish() error {
	var first *Envelope
	for _, early := range v.early {
		if first == nil || early[0].Position < first.Position {
			first = &early[0]
		}
	}
	if first == nil {
		return nil
	}
	return violation(*first, "version %d follows version %d", first.Version, v.versions[first.StreamID])
}

func violation(env Envelope, format string, args ...any) error {
	return &Violation{Position: env.Position, StreamID: env.StreamID, Type: env.Type, Problem: fmt.Sprintf(format, args...)}
}

// judge checks env, decoded, against its stream's state.
func (v *LogValidator) judge(env Envelope) error {
	bad := func(format string, args ...any) error { return violation(env, format, args...) }
	last, seen := v.versions[env.StreamID]
	switch {
	case !seen && env.Version != 1:
		v.partial[env.StreamID] = true
	case seen && env.Version != last+1:
		return bad("version %d follows version %d", env.Version, last)
	}
	v.versions[env.StreamID] = env.Version
	if v.partial[env.StreamID] {
		v.Unchecked++
		return nil
	}
	v.Checked++

	switch env.StreamType {
	case StreamFlowRun:
		before := v.flowRuns[env.StreamID]
		after := before.Apply(env.Event, env.RecordedAt)
		if !CanTransition(StreamFlowRun, before.State.Type, after.State.Type) {
			return bad("flow run cannot go from %s to %s", stateOrNew(before.State), after.State.Type)
		}
		v.flowRuns[env.StreamID] = after
	case StreamTaskRun:
		before := v.taskRuns[env.StreamID]
		if problem := attemptProblem(before, env.Event); problem != "" {
			return bad("%s", problem)
		}
		to, changes := taskRunTarget(env.Event, before)
		if changes && !CanTransition(StreamTaskRun, before.State.Type, to) {
			return bad("task run cannot go from %s to %s", stateOrNew(before.State), to)
		}
		v.taskRuns[env.StreamID] = before.Apply(env.Event, env.RecordedAt)
	case StreamDeployment:
		before := v.deploys[env.StreamID]
		switch e := env.Event.(type) {
		case DeploymentCreated:
			if env.Version != 1 {
				return bad("a deployment is created only once")
			}
		case DeploymentUpdated:
			if e.Version != before.Version+1 {
				return bad("deployment version %d follows version %d", e.Version, before.Version)
			}
		}
		if env.Version > 1 && before.Deleted {
			return bad("the deployment was deleted")
		}
		v.deploys[env.StreamID] = before.Apply(env.Event, env.RecordedAt)
	case StreamAutomation:
		before := v.autos[env.StreamID]
		if _, created := env.Event.(AutomationCreated); created != (env.Version == 1) {
			return bad("an automation is created once, by its first event")
		}
		if before.Deleted {
			return bad("the automation was deleted")
		}
		v.autos[env.StreamID] = before.Apply(env.Event, env.RecordedAt)
	case StreamAutomationFiring:
		if env.Version != 1 {
			return bad("a firing is recorded once")
		}
	case StreamRetention:
		// records of archivals: no state to follow; their version
		// sequence is checked above
	default:
		return bad("unknown stream type %q", env.StreamType)
	}
	return nil
}

// attemptProblem checks that attempts start in sequence and that results
// apply to the current attempt.
func attemptProblem(before TaskRun, e Event) string {
	switch e := e.(type) {
	case TaskRunStarted:
		if e.Attempt != before.Attempt+1 {
			return fmt.Sprintf("attempt %d started after attempt %d", e.Attempt, before.Attempt)
		}
	case TaskRunCompleted:
		if e.Attempt != before.Attempt {
			return fmt.Sprintf("result of attempt %d applied while attempt %d is current", e.Attempt, before.Attempt)
		}
	case TaskRunRetryScheduled:
		if e.Attempt != before.Attempt {
			return fmt.Sprintf("failure of attempt %d applied while attempt %d is current", e.Attempt, before.Attempt)
		}
	case TaskRunFailed:
		if e.Attempt != before.Attempt {
			return fmt.Sprintf("failure of attempt %d applied while attempt %d is current", e.Attempt, before.Attempt)
		}
	}
	return ""
}

func stateOrNew(s State) string {
	if s.IsZero() {
		return "(new)"
	}
	return string(s.Type)
}
