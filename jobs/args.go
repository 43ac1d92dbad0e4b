package jobs

import (
	"github.com/google/uuid"
	"github.com/riverqueue/river"
)

// KindTaskRun is the River job kind that works one attempt of a task run.
const KindTaskRun = "ordo.task_run"

// TaskRunArgs are the arguments of an ordo.task_run job: which attempt of
// which task run to work.
type TaskRunArgs struct {
	TaskRunID uuid.UUID `json:"task_run_id"`
	FlowRunID uuid.UUID `json:"flow_run_id"`
	Attempt   int       `json:"attempt"`
	// ChildFlowRunID is set on the job that reports a sub-flow run that
	// ended to the attempt of its parent task run that started it: that
	// job runs nothing and settles the attempt with the child's outcome.
	ChildFlowRunID uuid.UUID `json:"child_flow_run_id,omitzero"`
	// ChildCancelReason, on such a job, is why the child run was cancelled
	// before it started (its deployment's concurrency limit): the parent
	// attempt fails with it.
	ChildCancelReason string `json:"child_cancel_reason,omitempty"`
}

// Kind is the River job kind.
func (TaskRunArgs) Kind() string { return KindTaskRun }

// InsertOpts bounds River's own retries of a job. Those happen only when a
// worker cannot record an outcome (the database is unreachable); task
// failures are recorded as events and retried as new jobs.
func (TaskRunArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 10}
}
