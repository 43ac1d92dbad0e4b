package riverjob

import (
	"bytes"
	"encoding/json"

	"github.com/google/uuid"
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

// MaxAttempts bounds River's own retries of a task run job. Those happen
// only when a worker cannot record an outcome (the database is
// unreachable); task failures are recorded as events and retried as new
// jobs.
const MaxAttempts = 10

// UnmarshalJSON decodes a job's args. River decodes those of every job it
// works, and a JSON decoder is a good part of a quick task's cost, so the
// one shape an attempt's args take as PostgreSQL prints jsonb,
//
//	{"attempt": 1, "flow_run_id": "…", "task_run_id": "…"}
//
// is read directly; any other is decoded as JSON.
func (a *TaskRunArgs) UnmarshalJSON(b []byte) error {
	if args, ok := attemptArgs(b); ok {
		*a = args
		return nil
	}
	type plain TaskRunArgs // without this method
	return json.Unmarshal(b, (*plain)(a))
}

// attemptArgs reads args printed as jsonb prints an attempt's: keys by
// length, then bytewise, each followed by ": " and separated by ", ".
func attemptArgs(b []byte) (TaskRunArgs, bool) {
	const (
		head = `{"attempt": `
		flow = `, "flow_run_id": "`
		task = `", "task_run_id": "`
		tail = `"}`
		ids  = len(flow) + 36 + len(task) + 36 + len(tail)
	)
	if len(b) < len(head)+1+ids || !bytes.HasPrefix(b, []byte(head)) {
		return TaskRunArgs{}, false
	}
	digits := b[len(head) : len(b)-ids]
	if len(digits) > 9 || digits[0] == '0' {
		return TaskRunArgs{}, false
	}
	var args TaskRunArgs
	for _, c := range digits {
		if c < '0' || c > '9' {
			return TaskRunArgs{}, false
		}
		args.Attempt = args.Attempt*10 + int(c-'0')
	}
	rest := b[len(b)-ids:]
	if string(rest[:len(flow)]) != flow || string(rest[len(flow)+36:len(flow)+36+len(task)]) != task || string(rest[len(rest)-len(tail):]) != tail {
		return TaskRunArgs{}, false
	}
	var err1, err2 error
	args.FlowRunID, err1 = uuid.ParseBytes(rest[len(flow) : len(flow)+36])
	args.TaskRunID, err2 = uuid.ParseBytes(rest[len(flow)+36+len(task) : len(flow)+36+len(task)+36])
	return args, err1 == nil && err2 == nil
}
