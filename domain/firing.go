package domain

import (
	"time"

	"github.com/google/uuid"
)

// RunFiring is one firing of an automation for a flow run, with where each
// of its deliveries stands.
type RunFiring struct {
	FiringID        uuid.UUID  `json:"firing_id"`
	AutomationID    uuid.UUID  `json:"automation_id"`
	AutomationName  string     `json:"automation_name"` // as the automation is named now
	TriggerPosition *int64     `json:"trigger_position"`
	TriggerType     string     `json:"trigger_type"`
	TaskRunID       *uuid.UUID `json:"task_run_id"`
	CreatedAt       time.Time  `json:"created_at"`
	Deliveries      []Delivery `json:"deliveries"`
}
