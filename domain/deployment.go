package domain

import (
	"bytes"
	"encoding/json"
	"slices"
	"time"

	"github.com/google/uuid"
)

// Deployment is a deployment's state, folded from its stream.
type Deployment struct {
	ID        uuid.UUID
	Spec      DeploymentSpec
	Version   int // version of the spec: 1 at creation, +1 per change
	Paused    bool
	Deleted   bool
	Stream    int64 // stream version, for optimistic concurrency
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Deployment commands.
type (
	// SaveDeployment creates the deployment or, when it exists, records a
	// new version of its spec.
	SaveDeployment struct{ Spec DeploymentSpec }
	// PauseDeployment stops its schedule.
	PauseDeployment struct{}
	// ResumeDeployment starts its schedule again.
	ResumeDeployment struct{}
	// DeleteDeployment removes it.
	DeleteDeployment struct{}
)

// DeploymentCommand is one of the deployment commands above.
type DeploymentCommand interface{ isDeploymentCommand() }

func (SaveDeployment) isDeploymentCommand()   {}
func (PauseDeployment) isDeploymentCommand()  {}
func (ResumeDeployment) isDeploymentCommand() {}
func (DeleteDeployment) isDeploymentCommand() {}

// DecideDeployment returns the events cmd causes on d.
func DecideDeployment(d Deployment, cmd DeploymentCommand) ([]Event, error) {
	if save, ok := cmd.(SaveDeployment); ok {
		if err := save.Spec.Validate(); err != nil {
			return nil, err
		}
		if d.Stream == 0 || d.Deleted {
			if d.Deleted {
				return nil, Errorf(CodeConflict, "deployment %s was deleted", d.ID)
			}
			return []Event{DeploymentCreated{Spec: save.Spec}}, nil
		}
		changed := ChangedFields(d.Spec, save.Spec)
		if len(changed) == 0 {
			return nil, nil
		}
		return []Event{DeploymentUpdated{Spec: save.Spec, Version: d.Version + 1, Changed: changed}}, nil
	}
	if d.Stream == 0 || d.Deleted {
		return nil, Errorf(CodeNotFound, "deployment %s not found", d.ID)
	}
	switch cmd.(type) {
	case PauseDeployment:
		if d.Paused {
			return nil, nil
		}
		return []Event{DeploymentPaused{}}, nil
	case ResumeDeployment:
		if !d.Paused {
			return nil, nil
		}
		return []Event{DeploymentResumed{}}, nil
	case DeleteDeployment:
		return []Event{DeploymentDeleted{}}, nil
	}
	return nil, Errorf(CodeInternal, "unknown deployment command %T", cmd)
}

// Apply folds one event into the deployment's state.
func (d Deployment) Apply(e Event, at time.Time) Deployment {
	d.UpdatedAt = at
	switch e := e.(type) {
	case DeploymentCreated:
		d.Spec, d.Version, d.Paused, d.CreatedAt = e.Spec, 1, e.Spec.Paused, at
	case DeploymentUpdated:
		d.Spec, d.Version = e.Spec, e.Version
		d.Paused = e.Spec.Paused || d.Paused && !slices.Contains(e.Changed, "paused")
	case DeploymentPaused:
		d.Paused = true
	case DeploymentResumed:
		d.Paused = false
	case DeploymentDeleted:
		d.Deleted = true
	}
	return d
}

// ChangedFields names the top-level fields of a deployment spec that differ.
func ChangedFields(a, b DeploymentSpec) []string { return changedJSONFields(a, b) }

// changedJSONFields names the top-level JSON fields of two values that differ.
func changedJSONFields(a, b any) []string {
	ma, mb := fieldsOf(a), fieldsOf(b)
	var changed []string
	for _, k := range sortedKeys(ma, mb) {
		if !bytes.Equal(ma[k], mb[k]) {
			changed = append(changed, k)
		}
	}
	return changed
}

func fieldsOf(s any) map[string]json.RawMessage {
	b, _ := json.Marshal(s)
	var m map[string]json.RawMessage
	_ = json.Unmarshal(b, &m)
	for k, v := range m { // compact form so that equal values compare equal
		var buf bytes.Buffer
		if json.Compact(&buf, v) == nil {
			m[k] = buf.Bytes()
		}
	}
	return m
}

func sortedKeys(ms ...map[string]json.RawMessage) []string {
	seen := map[string]bool{}
	var keys []string
	for _, m := range ms {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	slices.Sort(keys)
	return keys
}
