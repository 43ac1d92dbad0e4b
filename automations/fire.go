package automations

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// firing is one automation matched by one event, to be recorded.
type firing struct {
	automation domain.Automation
	fired      domain.AutomationFired
	run        domain.RunContext
	runName    string
	at         time.Time // when the triggering event was recorded
}

func (f firing) id() uuid.UUID {
	if f.fired.Test {
		return uuid.NewSHA1(f.automation.ID, []byte("test:"+f.at.Format(time.RFC3339Nano)))
	}
	return domain.FiringID(f.automation.ID, f.fired.TriggerPosition)
}

// kind is the firing's trigger type as automation_firings keeps it.
func (f firing) kind() string {
	switch {
	case f.fired.Test:
		return "test"
	case f.fired.Trigger == "":
		return domain.TriggerState
	}
	return f.fired.Trigger
}

// CloudEvent is the CloudEvents 1.0 structured JSON body a webhook gets.
type CloudEvent struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject,omitempty"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Data            EventData `json:"data"`
}

// EventData is a firing's CloudEvent data.
type EventData struct {
	Automation struct {
		ID   uuid.UUID `json:"id"`
		Name string    `json:"name"`
	} `json:"automation"`
	Trigger struct {
		Position  int64                `json:"position,omitempty"`
		EventType string               `json:"event_type"`
		Kind      string               `json:"kind"`             // the trigger's type, "test" for a test firing
		Window    *domain.FiringWindow `json:"window,omitempty"` // absence and count triggers
	} `json:"trigger"`
	FlowRun   *EventRun     `json:"flow_run,omitempty"`
	TaskRunID *uuid.UUID    `json:"task_run_id,omitempty"`
	State     *domain.State `json:"state,omitempty"`
	Test      bool          `json:"test,omitempty"`
}

// EventRun is the flow run of a firing's CloudEvent data.
type EventRun struct {
	ID             uuid.UUID `json:"id"`
	Name           string    `json:"name,omitempty"`
	DeploymentName string    `json:"deployment_name,omitempty"`
	WorkQueue      string    `json:"work_queue,omitempty"`
	Tags           []string  `json:"tags"`
	Flow           string    `json:"flow,omitempty"`
}

// body builds the CloudEvent of a firing.
func (f firing) body() ([]byte, error) {
	ce := CloudEvent{SpecVersion: "1.0", ID: f.id().String(), Source: "/automations/" + f.automation.ID.String(),
		Type: "dev.ordo.automation.fired", Time: f.at.UTC(), DataContentType: "application/json"}
	d := &ce.Data
	d.Automation.ID, d.Automation.Name = f.automation.ID, f.automation.Spec.Name
	d.Trigger.Position, d.Trigger.EventType = f.fired.TriggerPosition, f.fired.TriggerType
	d.Trigger.Kind, d.Trigger.Window = f.kind(), f.fired.Window
	d.TaskRunID, d.Test = f.fired.TaskRunID, f.fired.Test
	if !f.fired.State.IsZero() {
		st := f.fired.State
		d.State = &st
	}
	if f.run.FlowRunID != uuid.Nil {
		d.FlowRun = &EventRun{f.run.FlowRunID, f.runName, f.run.DeploymentName, f.run.WorkQueue, f.run.Tags, f.run.Flow}
		if d.FlowRun.Tags == nil {
			d.FlowRun.Tags = []string{}
		}
		ce.Subject = "flow_runs/" + f.run.FlowRunID.String()
	}
	return json.Marshal(ce)
}

// recordFirings appends each firing's AutomationFired, inserts its rows
// and its delivery jobs, all within tx.
// Their attempts are bounded by rc's MaxAttempts.
func recordFirings(ctx context.Context, tx pgx.Tx, store *eventstore.Store, rc *river.Client[pgx.Tx], actor string, fs []firing) error {
	if len(fs) == 0 {
		return nil
	}
	appends := make([]eventstore.Append, len(fs))
	var jobs []river.InsertManyParams
	// The rows go in one round trip: one statement each would make a
	// batch's transaction, and the events waiting behind it, as slow as
	// its firings are many.
	var rows pgx.Batch
	for i, f := range fs {
		id := f.id()
		reason := fmt.Sprintf("automation %q matched %s at position %d", f.automation.Spec.Name, f.fired.TriggerType, f.fired.TriggerPosition)
		if f.fired.Test {
			reason = fmt.Sprintf("automation %q test-fired", f.automation.Spec.Name)
		}
		appends[i] = eventstore.Append{StreamID: id, Events: []domain.Event{f.fired},
			Metadata: domain.Metadata{Actor: actor, Reason: reason, CausationID: causation(f.fired), CorrelationID: correlation(f.run)}}
		var position *int64
		if !f.fired.Test {
			position = &f.fired.TriggerPosition
		}
		var flowRun *uuid.UUID
		if f.run.FlowRunID != uuid.Nil {
			flowRun = &f.run.FlowRunID
		}
		rows.Queue(`
INSERT INTO automation_firings (id, automation_id, trigger_position, trigger_type, flow_run_id, task_run_id, trigger_kind, trigger_window)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, id, f.automation.ID, position, f.fired.TriggerType, flowRun, f.fired.TaskRunID, f.kind(), f.fired.Window)
		body, err := f.body()
		if err != nil {
			return err
		}
		for ai, a := range f.automation.Spec.Actions {
			rows.Queue(`
INSERT INTO automation_deliveries (firing_id, action, automation_id, action_type, target) VALUES ($1, $2, $3, $4, $5)`,
				id, ai, f.automation.ID, a.Type, target(a))
			args := DeliveryArgs{FiringID: id, Action: ai, URL: a.URL, SecretEnv: a.SecretEnv, Body: string(body), Trigger: f.automation.Spec.Trigger.Type}
			if a.Type != domain.ActionWebhook {
				args.Spec = &a
			}
			jobs = append(jobs, river.InsertManyParams{
				Args:       args,
				InsertOpts: &river.InsertOpts{Queue: QueueAutomations},
			})
		}
	}
	if err := tx.SendBatch(ctx, &rows).Close(); err != nil {
		return fmt.Errorf("record firings and their deliveries: %w", err)
	}
	if _, err := store.Append(ctx, tx, appends...); err != nil {
		return err
	}
	if _, err := rc.InsertManyFastTx(ctx, tx, jobs); err != nil {
		return fmt.Errorf("insert delivery jobs: %w", err)
	}
	return nil
}

func causation(e domain.AutomationFired) string {
	if e.Test {
		return ""
	}
	return strconv.FormatInt(e.TriggerPosition, 10)
}

func correlation(rc domain.RunContext) string {
	if rc.FlowRunID == uuid.Nil {
		return ""
	}
	return rc.FlowRunID.String()
}
