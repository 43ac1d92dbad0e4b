package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
)

// A batch folds a slice of the log into the read-model rows it touches, in
// memory, with the domain's own Apply functions, and then writes them with
// a few set-based statements: rows travel as one JSON array each, expanded
// by jsonb_to_recordset.
type batch struct {
	deploys     map[uuid.UUID]*deploymentRow
	deployOrder []uuid.UUID
	flows       map[uuid.UUID]*flowRunRow
	flowOrder   []uuid.UUID
	tasks       map[uuid.UUID]*taskRunRow
	taskOrder   []uuid.UUID
	attempts    map[attemptKey]*attemptRow
	attemptKeys []attemptKey
	history     []historyRow
	ended       []taskEnd // task runs that reached a terminal state
}

// taskEnd is a task run that ended, for the duration metric.
type taskEnd struct {
	state    domain.StateType
	duration time.Duration // from its first start; 0 when it never started
}

type deploymentRow struct {
	d       domain.Deployment
	loaded  bool // the row exists in the table
	deleted bool
}

type flowRunRow struct {
	r         domain.FlowRun
	isNew     bool
	resultSet bool // an event of the batch set or cleared the result
	taskCount int
	createdAt time.Time
	updatedAt time.Time
}

type taskRunRow struct {
	t         domain.TaskRun
	isNew     bool
	position  int64 // of its TaskRunCreated event
	resultSet bool
	createdAt time.Time
	updatedAt time.Time
}

type attemptKey struct {
	taskRunID uuid.UUID
	attempt   int
}

type attemptRow struct {
	TaskRunID uuid.UUID  `json:"task_run_id"`
	Attempt   int        `json:"attempt"`
	FlowRunID uuid.UUID  `json:"flow_run_id"`
	Worker    string     `json:"worker"`
	StartedAt *time.Time `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at"`
	Outcome   string     `json:"outcome"`
	Error     *string    `json:"error"`
	ExitCode  *int       `json:"exit_code"`
}

type historyRow struct {
	StreamID      uuid.UUID `json:"stream_id"`
	Version       int64     `json:"version"`
	StreamType    string    `json:"stream_type"`
	FlowRunID     uuid.UUID `json:"flow_run_id"`
	Position      int64     `json:"position"`
	TransactionID int64     `json:"transaction_id"`
	EventType     string    `json:"event_type"`
	FromType      *string   `json:"from_type"`
	FromName      *string   `json:"from_name"`
	ToType        string    `json:"to_type"`
	ToName        string    `json:"to_name"`
	Message       string    `json:"message"`
	Actor         string    `json:"actor"`
	Reason        string    `json:"reason"`
	At            time.Time `json:"at"`
}

func newBatch() *batch {
	return &batch{
		deploys:  map[uuid.UUID]*deploymentRow{},
		flows:    map[uuid.UUID]*flowRunRow{},
		tasks:    map[uuid.UUID]*taskRunRow{},
		attempts: map[attemptKey]*attemptRow{},
	}
}

// load reads the current rows of the streams that the batch continues (the
// ones whose first event here is not their first).
func (b *batch) load(ctx context.Context, tx pgx.Tx, envs []domain.Envelope) error {
	first := map[uuid.UUID]bool{}
	var deployIDs, flowIDs, taskIDs []uuid.UUID
	for _, env := range envs {
		if first[env.StreamID] {
			continue
		}
		first[env.StreamID] = true
		if env.Version == 1 {
			continue
		}
		switch env.StreamType {
		case domain.StreamDeployment:
			deployIDs = append(deployIDs, env.StreamID)
		case domain.StreamFlowRun:
			flowIDs = append(flowIDs, env.StreamID)
		case domain.StreamTaskRun:
			taskIDs = append(taskIDs, env.StreamID)
		}
	}
	if len(deployIDs) > 0 {
		rows, err := tx.Query(ctx, `SELECT id, spec, version, paused, created_at, updated_at, stream_version FROM deployments WHERE id = ANY($1)`, deployIDs)
		if err != nil {
			return fmt.Errorf("load deployments: %w", err)
		}
		for rows.Next() {
			var d domain.Deployment
			var spec []byte
			if err := rows.Scan(&d.ID, &spec, &d.Version, &d.Paused, &d.CreatedAt, &d.UpdatedAt, &d.Stream); err != nil {
				rows.Close()
				return fmt.Errorf("load deployments: %w", err)
			}
			if err := json.Unmarshal(spec, &d.Spec); err != nil {
				rows.Close()
				return fmt.Errorf("load deployment %s: %w", d.ID, err)
			}
			b.deploys[d.ID] = &deploymentRow{d: d, loaded: true}
			b.deployOrder = append(b.deployOrder, d.ID)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("load deployments: %w", err)
		}
	}
	if len(flowIDs) > 0 {
		rows, err := tx.Query(ctx, `
SELECT id, stream_version, state_type, state_name, state_timestamp, state_message, run_count, started_at, ended_at, created_at
FROM flow_runs WHERE id = ANY($1)`, flowIDs)
		if err != nil {
			return fmt.Errorf("load flow runs: %w", err)
		}
		for rows.Next() {
			row := &flowRunRow{}
			r := &row.r
			if err := rows.Scan(&r.ID, &r.Version, &r.State.Type, &r.State.Name, &r.State.Timestamp, &r.State.Message,
				&r.RunCount, &r.StartedAt, &r.EndedAt, &row.createdAt); err != nil {
				rows.Close()
				return fmt.Errorf("load flow runs: %w", err)
			}
			b.flows[r.ID] = row
			b.flowOrder = append(b.flowOrder, r.ID)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("load flow runs: %w", err)
		}
	}
	if len(taskIDs) > 0 {
		rows, err := tx.Query(ctx, `
SELECT id, flow_run_id, stream_version, state_type, state_name, state_timestamp, state_message, run_count,
       started_at, ended_at, retry_at, error, exit_code, coalesce(cache_key, ''), child_flow_run_id, created_at
FROM task_runs WHERE id = ANY($1)`, taskIDs)
		if err != nil {
			return fmt.Errorf("load task runs: %w", err)
		}
		for rows.Next() {
			row := &taskRunRow{}
			t := &row.t
			var retryAt *time.Time
			var errText *string
			var exitCode *int
			if err := rows.Scan(&t.ID, &t.FlowRunID, &t.Version, &t.State.Type, &t.State.Name, &t.State.Timestamp, &t.State.Message,
				&t.Attempt, &t.StartedAt, &t.EndedAt, &retryAt, &errText, &exitCode, &t.CacheKey, &t.ChildFlowRunID, &row.createdAt); err != nil {
				rows.Close()
				return fmt.Errorf("load task runs: %w", err)
			}
			if retryAt != nil {
				t.RetryAt = *retryAt
			}
			if errText != nil {
				t.LastFailure = &domain.AttemptFailure{Error: *errText, ExitCode: exitCode}
			}
			b.tasks[t.ID] = row
			b.taskOrder = append(b.taskOrder, t.ID)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("load task runs: %w", err)
		}
	}
	return nil
}

// gapError says that an event does not directly follow what the read models
// hold for its stream: a projection bug or a damaged read model. The
// projector stops rather than guess.
func gapError(env domain.Envelope, have int64) error {
	return fmt.Errorf("projection gap: event %d (%s) is version %d of %s stream %s, but the read model holds version %d",
		env.Position, env.Type, env.Version, env.StreamType, env.StreamID, have)
}

// fold applies the events, in log order, to the rows in memory.
func (b *batch) fold(envs []domain.Envelope) error {
	for _, env := range envs {
		at := env.RecordedAt
		switch env.StreamType {
		case domain.StreamDeployment:
			row := b.deploys[env.StreamID]
			if row == nil {
				if env.Version != 1 {
					return gapError(env, 0)
				}
				row = &deploymentRow{d: domain.Deployment{ID: env.StreamID}}
				b.deploys[env.StreamID] = row
				b.deployOrder = append(b.deployOrder, env.StreamID)
			}
			if env.Version != row.d.Stream+1 {
				return gapError(env, row.d.Stream)
			}
			row.d = row.d.Apply(env.Event, at)
			row.d.Stream = env.Version
			row.deleted = row.d.Deleted

		case domain.StreamFlowRun:
			row := b.flows[env.StreamID]
			if row == nil {
				if env.Version != 1 {
					return gapError(env, 0)
				}
				row = &flowRunRow{isNew: true, createdAt: at, r: domain.FlowRun{ID: env.StreamID}}
				b.flows[env.StreamID] = row
				b.flowOrder = append(b.flowOrder, env.StreamID)
			}
			if env.Version != row.r.Version+1 {
				return gapError(env, row.r.Version)
			}
			before := row.r.State
			row.r = row.r.Apply(env.Event, at)
			row.r.Version, row.updatedAt = env.Version, at
			switch e := env.Event.(type) {
			case domain.FlowRunCreated:
				row.taskCount = len(e.TaskRunIDs)
			case domain.FlowRunCompleted, domain.FlowRunRetried:
				row.resultSet = true
			}
			b.addHistory(env, env.StreamID, before, row.r.State)

		case domain.StreamTaskRun:
			row := b.tasks[env.StreamID]
			if row == nil {
				if env.Version != 1 {
					return gapError(env, 0)
				}
				row = &taskRunRow{isNew: true, createdAt: at, position: env.Position, t: domain.TaskRun{ID: env.StreamID}}
				b.tasks[env.StreamID] = row
				b.taskOrder = append(b.taskOrder, env.StreamID)
			}
			if env.Version != row.t.Version+1 {
				return gapError(env, row.t.Version)
			}
			before := row.t
			row.t = row.t.Apply(env.Event, at)
			row.t.Version, row.updatedAt = env.Version, at
			switch env.Event.(type) {
			case domain.TaskRunCompleted, domain.TaskRunCached, domain.TaskRunReset:
				row.resultSet = true
			}
			b.foldAttempt(env, before, row.t)
			if after := row.t.State.Type; after.Terminal() && !before.State.Type.Terminal() {
				end := taskEnd{state: after}
				if st := row.t.StartedAt; st != nil && row.t.EndedAt != nil {
					end.duration = row.t.EndedAt.Sub(*st)
				}
				b.ended = append(b.ended, end)
			}
			b.addHistory(env, row.t.FlowRunID, before.State, row.t.State)

		case domain.StreamRetention:
			// records of what ordo prune archived: nothing to project

		default:
			return fmt.Errorf("event %d: unknown stream type %q", env.Position, env.StreamType)
		}
	}
	return nil
}

// foldAttempt keeps task_run_attempts: a row per started attempt, closed by
// the event that ends it.
func (b *batch) foldAttempt(env domain.Envelope, before, after domain.TaskRun) {
	at := env.RecordedAt
	get := func(attempt int) *attemptRow {
		k := attemptKey{after.ID, attempt}
		a := b.attempts[k]
		if a == nil {
			a = &attemptRow{TaskRunID: after.ID, Attempt: attempt, FlowRunID: after.FlowRunID}
			b.attempts[k] = a
			b.attemptKeys = append(b.attemptKeys, k)
		}
		return a
	}
	fail := func(f domain.AttemptFailure) {
		a := get(f.Attempt)
		a.EndedAt, a.Error, a.ExitCode = &at, &f.Error, f.ExitCode
		switch {
		case f.Crashed:
			a.Outcome = "crashed"
		case f.TimedOut:
			a.Outcome = "timed_out"
		default:
			a.Outcome = "failed"
		}
	}
	switch e := env.Event.(type) {
	case domain.TaskRunStarted:
		a := get(e.Attempt)
		a.Worker, a.StartedAt, a.Outcome = e.Worker, &at, "running"
	case domain.TaskRunCompleted:
		a := get(e.Attempt)
		a.EndedAt, a.Outcome = &at, "completed"
	case domain.TaskRunRetryScheduled:
		fail(e.AttemptFailure)
	case domain.TaskRunFailed:
		fail(e.AttemptFailure)
	case domain.TaskRunCancelled:
		if before.State.Type == domain.Running && before.Attempt > 0 {
			a := get(before.Attempt)
			a.EndedAt, a.Outcome = &at, "cancelled"
		}
	}
}

func (b *batch) addHistory(env domain.Envelope, flowRunID uuid.UUID, before, after domain.State) {
	h := historyRow{
		StreamID: env.StreamID, Version: env.Version, StreamType: env.StreamType, FlowRunID: flowRunID,
		Position: env.Position, TransactionID: int64(env.TransactionID), EventType: env.Type,
		ToType: string(after.Type), ToName: after.Name, Message: after.Message,
		Actor: env.Metadata.Actor, Reason: env.Metadata.Reason, At: env.RecordedAt,
	}
	if !before.IsZero() {
		ft := string(before.Type)
		h.FromType, h.FromName = &ft, &before.Name
	}
	b.history = append(b.history, h)
}

// Row shapes for jsonb_to_recordset.
type (
	deploymentOut struct {
		ID            uuid.UUID             `json:"id"`
		Name          string                `json:"name"`
		Version       int                   `json:"version"`
		Description   string                `json:"description"`
		WorkQueue     string                `json:"work_queue"`
		Tags          []string              `json:"tags"`
		Parameters    map[string]any        `json:"parameters"`
		Schedule      *domain.Schedule      `json:"schedule"`
		Paused        bool                  `json:"paused"`
		Flow          domain.FlowSpec       `json:"flow"`
		Spec          domain.DeploymentSpec `json:"spec"`
		CreatedAt     time.Time             `json:"created_at"`
		UpdatedAt     time.Time             `json:"updated_at"`
		StreamVersion int64                 `json:"stream_version"`
	}
	flowRunOut struct {
		ID                uuid.UUID       `json:"id"`
		Name              string          `json:"name"`
		FlowName          string          `json:"flow_name"`
		DeploymentID      uuid.UUID       `json:"deployment_id"`
		DeploymentName    string          `json:"deployment_name"`
		DeploymentVersion int             `json:"deployment_version"`
		WorkQueue         string          `json:"work_queue"`
		Tags              []string        `json:"tags"`
		Parameters        map[string]any  `json:"parameters"`
		StateType         string          `json:"state_type"`
		StateName         string          `json:"state_name"`
		StateTimestamp    time.Time       `json:"state_timestamp"`
		StateMessage      string          `json:"state_message"`
		ScheduledAt       time.Time       `json:"scheduled_at"`
		StartedAt         *time.Time      `json:"started_at"`
		EndedAt           *time.Time      `json:"ended_at"`
		RunCount          int             `json:"run_count"`
		ParentTaskRunID   *uuid.UUID      `json:"parent_task_run_id"`
		ParentFlowRunID   *uuid.UUID      `json:"parent_flow_run_id"`
		AutoScheduled     bool            `json:"auto_scheduled"`
		ResultSet         bool            `json:"result_set"`
		Result            json.RawMessage `json:"result"`
		TaskCount         int             `json:"task_count"`
		CreatedAt         time.Time       `json:"created_at"`
		UpdatedAt         time.Time       `json:"updated_at"`
		StreamVersion     int64           `json:"stream_version"`
	}
	taskRunOut struct {
		ID             uuid.UUID        `json:"id"`
		FlowRunID      uuid.UUID        `json:"flow_run_id"`
		TaskName       string           `json:"task_name"`
		Kind           string           `json:"kind"`
		DependsOn      []string         `json:"depends_on"`
		Tags           []string         `json:"tags"`
		Task           *domain.TaskSpec `json:"task"`
		StateType      string           `json:"state_type"`
		StateName      string           `json:"state_name"`
		StateTimestamp time.Time        `json:"state_timestamp"`
		StateMessage   string           `json:"state_message"`
		RunCount       int              `json:"run_count"`
		StartedAt      *time.Time       `json:"started_at"`
		EndedAt        *time.Time       `json:"ended_at"`
		RetryAt        *time.Time       `json:"retry_at"`
		ResultSet      bool             `json:"result_set"`
		Result         json.RawMessage  `json:"result"`
		Error          *string          `json:"error"`
		ExitCode       *int             `json:"exit_code"`
		CacheKey       *string          `json:"cache_key"`
		ChildFlowRunID *uuid.UUID       `json:"child_flow_run_id"`
		CreatedPos     int64            `json:"created_position"`
		CreatedAt      time.Time        `json:"created_at"`
		UpdatedAt      time.Time        `json:"updated_at"`
		StreamVersion  int64            `json:"stream_version"`
	}
)

// micro truncates a time from an event payload to Postgres' precision, the
// same way whichever statement writes it.
func micro(t time.Time) time.Time { return t.Truncate(time.Microsecond) }

func rawOrNil(m json.RawMessage) json.RawMessage {
	if len(m) == 0 {
		return nil
	}
	return m
}

func flowRunOutOf(row *flowRunRow) flowRunOut {
	r := row.r
	return flowRunOut{
		ID: r.ID, Name: r.Name, FlowName: r.Flow.Name, DeploymentID: r.DeploymentID, DeploymentName: r.DeploymentName,
		DeploymentVersion: r.DeploymentVersion, WorkQueue: r.WorkQueue, Tags: r.Tags, Parameters: r.Parameters,
		StateType: string(r.State.Type), StateName: r.State.Name, StateTimestamp: r.State.Timestamp, StateMessage: r.State.Message,
		ScheduledAt: micro(r.ScheduledAt), StartedAt: r.StartedAt, EndedAt: r.EndedAt, RunCount: r.RunCount,
		ParentTaskRunID: r.ParentTaskRunID, ParentFlowRunID: r.ParentFlowRunID, AutoScheduled: r.AutoScheduled,
		ResultSet: row.resultSet, Result: rawOrNil(r.Result), TaskCount: row.taskCount,
		CreatedAt: row.createdAt, UpdatedAt: row.updatedAt, StreamVersion: r.Version,
	}
}

func taskRunOutOf(row *taskRunRow) taskRunOut {
	t := row.t
	o := taskRunOut{
		ID: t.ID, FlowRunID: t.FlowRunID, TaskName: t.Task.Name, Kind: t.Task.Kind(), DependsOn: t.Task.DependsOn, Tags: t.Task.Tags,
		StateType: string(t.State.Type), StateName: t.State.Name, StateTimestamp: t.State.Timestamp, StateMessage: t.State.Message,
		RunCount: t.Attempt, StartedAt: t.StartedAt, EndedAt: t.EndedAt,
		ResultSet: row.resultSet, Result: rawOrNil(t.Result), ChildFlowRunID: t.ChildFlowRunID, CreatedPos: row.position,
		CreatedAt: row.createdAt, UpdatedAt: row.updatedAt, StreamVersion: t.Version,
	}
	if row.isNew {
		task := t.Task
		o.Task = &task
	}
	if !t.RetryAt.IsZero() {
		ra := micro(t.RetryAt)
		o.RetryAt = &ra
	}
	if f := t.LastFailure; f != nil {
		o.Error, o.ExitCode = &f.Error, f.ExitCode
	}
	if t.CacheKey != "" {
		o.CacheKey = &t.CacheKey
	}
	return o
}

const (
	upsertDeploymentsSQL = `
INSERT INTO deployments (id, name, version, description, work_queue, tags, parameters, schedule, paused, flow, spec, created_at, updated_at, stream_version)
SELECT id, name, version, coalesce(description, ''), work_queue, coalesce(tags, '{}'), coalesce(parameters, '{}'), schedule, paused, flow, spec, created_at, updated_at, stream_version
FROM jsonb_to_recordset($1::jsonb) AS u(id uuid, name text, version int, description text, work_queue text, tags text[], parameters jsonb,
    schedule jsonb, paused boolean, flow jsonb, spec jsonb, created_at timestamptz, updated_at timestamptz, stream_version bigint)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, version = EXCLUDED.version, description = EXCLUDED.description, work_queue = EXCLUDED.work_queue,
    tags = EXCLUDED.tags, parameters = EXCLUDED.parameters, schedule = EXCLUDED.schedule, paused = EXCLUDED.paused,
    flow = EXCLUDED.flow, spec = EXCLUDED.spec, updated_at = EXCLUDED.updated_at, stream_version = EXCLUDED.stream_version
WHERE deployments.stream_version < EXCLUDED.stream_version`

	flowRunColumns = `id uuid, name text, flow_name text, deployment_id uuid, deployment_name text, deployment_version int, work_queue text,
    tags text[], parameters jsonb, state_type text, state_name text, state_timestamp timestamptz, state_message text,
    scheduled_at timestamptz, started_at timestamptz, ended_at timestamptz, run_count int, parent_task_run_id uuid,
    parent_flow_run_id uuid, auto_scheduled boolean, result_set boolean, result jsonb, task_count int,
    created_at timestamptz, updated_at timestamptz, stream_version bigint`

	updateFlowRunsSQL = `
UPDATE flow_runs f SET
    state_type = u.state_type, state_name = u.state_name, state_timestamp = u.state_timestamp, state_message = coalesce(u.state_message, ''),
    started_at = u.started_at, ended_at = u.ended_at, run_count = u.run_count,
    result = CASE WHEN u.result_set THEN u.result ELSE f.result END,
    updated_at = u.updated_at, stream_version = u.stream_version
FROM jsonb_to_recordset($1::jsonb) AS u(` + flowRunColumns + `)
WHERE f.id = u.id AND f.stream_version < u.stream_version`

	taskRunColumns = `id uuid, flow_run_id uuid, task_name text, kind text, depends_on text[], tags text[], task jsonb,
    state_type text, state_name text, state_timestamp timestamptz, state_message text, run_count int,
    started_at timestamptz, ended_at timestamptz, retry_at timestamptz, result_set boolean, result jsonb,
    error text, exit_code int, cache_key text, child_flow_run_id uuid, created_position bigint,
    created_at timestamptz, updated_at timestamptz, stream_version bigint`

	updateTaskRunsSQL = `
UPDATE task_runs t SET
    state_type = u.state_type, state_name = u.state_name, state_timestamp = u.state_timestamp, state_message = coalesce(u.state_message, ''),
    run_count = u.run_count, started_at = u.started_at, ended_at = u.ended_at, retry_at = u.retry_at,
    result = CASE WHEN u.result_set THEN u.result ELSE t.result END,
    error = u.error, exit_code = u.exit_code, cache_key = u.cache_key, child_flow_run_id = u.child_flow_run_id,
    updated_at = u.updated_at, stream_version = u.stream_version
FROM jsonb_to_recordset($1::jsonb) AS u(` + taskRunColumns + `)
WHERE t.id = u.id AND t.stream_version < u.stream_version`

	upsertAttemptsSQL = `
INSERT INTO task_run_attempts AS a (task_run_id, attempt, flow_run_id, worker, started_at, ended_at, outcome, error, exit_code)
SELECT task_run_id, attempt, flow_run_id, coalesce(worker, ''), started_at, ended_at, outcome, error, exit_code
FROM jsonb_to_recordset($1::jsonb) AS u(task_run_id uuid, attempt int, flow_run_id uuid, worker text, started_at timestamptz,
    ended_at timestamptz, outcome text, error text, exit_code int)
ON CONFLICT (task_run_id, attempt) DO UPDATE SET
    worker = CASE WHEN EXCLUDED.worker <> '' THEN EXCLUDED.worker ELSE a.worker END,
    started_at = coalesce(EXCLUDED.started_at, a.started_at),
    ended_at = coalesce(EXCLUDED.ended_at, a.ended_at),
    outcome = EXCLUDED.outcome,
    error = coalesce(EXCLUDED.error, a.error),
    exit_code = coalesce(EXCLUDED.exit_code, a.exit_code)`
)

// write stores the folded rows.
func (b *batch) write(ctx context.Context, tx pgx.Tx) error {
	var upserts []deploymentOut
	var deleted []uuid.UUID
	for _, id := range b.deployOrder {
		row := b.deploys[id]
		if row.deleted {
			deleted = append(deleted, id)
			continue
		}
		d, s := row.d, row.d.Spec
		upserts = append(upserts, deploymentOut{
			ID: d.ID, Name: s.Name, Version: d.Version, Description: s.Description, WorkQueue: s.WorkQueue,
			Tags: s.Tags, Parameters: s.Parameters, Schedule: s.Schedule, Paused: d.Paused, Flow: s.Flow, Spec: s,
			CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, StreamVersion: d.Stream,
		})
	}
	if err := execRows(ctx, tx, "upsert deployments", upsertDeploymentsSQL, upserts, -1); err != nil {
		return err
	}
	if len(deleted) > 0 {
		if _, err := tx.Exec(ctx, `DELETE FROM deployments WHERE id = ANY($1)`, deleted); err != nil {
			return fmt.Errorf("delete deployments: %w", err)
		}
	}

	var newFlows, oldFlows []flowRunOut
	for _, id := range b.flowOrder {
		row := b.flows[id]
		if row.isNew {
			newFlows = append(newFlows, flowRunOutOf(row))
		} else {
			oldFlows = append(oldFlows, flowRunOutOf(row))
		}
	}
	if err := copyRows(ctx, tx, "flow_runs", flowRunCopyColumns, newFlows, flowRunOut.copyValues); err != nil {
		return err
	}
	if err := execRows(ctx, tx, "update flow runs", updateFlowRunsSQL, oldFlows, len(oldFlows)); err != nil {
		return err
	}

	var newTasks, oldTasks []taskRunOut
	for _, id := range b.taskOrder {
		row := b.tasks[id]
		if row.isNew {
			newTasks = append(newTasks, taskRunOutOf(row))
		} else {
			oldTasks = append(oldTasks, taskRunOutOf(row))
		}
	}
	if err := copyRows(ctx, tx, "task_runs", taskRunCopyColumns, newTasks, taskRunOut.copyValues); err != nil {
		return err
	}
	if err := execRows(ctx, tx, "update task runs", updateTaskRunsSQL, oldTasks, len(oldTasks)); err != nil {
		return err
	}

	attempts := make([]*attemptRow, len(b.attemptKeys))
	for i, k := range b.attemptKeys {
		attempts[i] = b.attempts[k]
	}
	if err := execRows(ctx, tx, "upsert task run attempts", upsertAttemptsSQL, attempts, -1); err != nil {
		return err
	}
	return copyRows(ctx, tx, "state_history", historyCopyColumns, b.history, historyRow.copyValues)
}

// New rows go in with COPY: the batch holds the checkpoint's row lock, so
// no other projector writes them, and a row that exists already (a double
// apply) fails the batch on its primary key.
var (
	flowRunCopyColumns = []string{"id", "name", "flow_name", "deployment_id", "deployment_name", "deployment_version", "work_queue", "tags", "parameters",
		"state_type", "state_name", "state_timestamp", "state_message", "scheduled_at", "started_at", "ended_at", "run_count",
		"parent_task_run_id", "parent_flow_run_id", "auto_scheduled", "result", "task_count", "created_at", "updated_at", "stream_version"}
	taskRunCopyColumns = []string{"id", "flow_run_id", "task_name", "kind", "depends_on", "tags", "task", "state_type", "state_name", "state_timestamp",
		"state_message", "run_count", "started_at", "ended_at", "retry_at", "result", "error", "exit_code", "cache_key", "child_flow_run_id",
		"created_position", "created_at", "updated_at", "stream_version"}
	historyCopyColumns = []string{"stream_id", "version", "stream_type", "flow_run_id", "position", "transaction_id", "event_type",
		"from_type", "from_name", "to_type", "to_name", "message", "actor", "reason", "at"}
)

func copyRows[T any](ctx context.Context, tx pgx.Tx, table string, columns []string, rows []T, values func(T) ([]any, error)) error {
	if len(rows) == 0 {
		return nil
	}
	n, err := tx.CopyFrom(ctx, pgx.Identifier{table}, columns, pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) { return values(rows[i]) }))
	if err != nil {
		return fmt.Errorf("insert %s: %w", table, err)
	}
	if n != int64(len(rows)) {
		return fmt.Errorf("insert %s: %d of %d rows written", table, n, len(rows))
	}
	return nil
}

// jsonValue is a jsonb value for COPY: NULL for nothing.
func jsonValue(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	return []byte(raw)
}

func (r flowRunOut) copyValues() ([]any, error) {
	params, err := json.Marshal(nonNilMap(r.Parameters))
	if err != nil {
		return nil, fmt.Errorf("flow run %s: encode parameters: %w", r.ID, err)
	}
	return []any{r.ID, r.Name, r.FlowName, r.DeploymentID, r.DeploymentName, r.DeploymentVersion, r.WorkQueue, nonNil(r.Tags), params,
		r.StateType, r.StateName, r.StateTimestamp, r.StateMessage, r.ScheduledAt, r.StartedAt, r.EndedAt, r.RunCount,
		r.ParentTaskRunID, r.ParentFlowRunID, r.AutoScheduled, jsonValue(r.Result), r.TaskCount, r.CreatedAt, r.UpdatedAt, r.StreamVersion}, nil
}

func (t taskRunOut) copyValues() ([]any, error) {
	task, err := json.Marshal(t.Task)
	if err != nil {
		return nil, fmt.Errorf("task run %s: encode task: %w", t.ID, err)
	}
	return []any{t.ID, t.FlowRunID, t.TaskName, t.Kind, nonNil(t.DependsOn), nonNil(t.Tags), task, t.StateType, t.StateName, t.StateTimestamp,
		t.StateMessage, t.RunCount, t.StartedAt, t.EndedAt, t.RetryAt, jsonValue(t.Result), t.Error, t.ExitCode, t.CacheKey, t.ChildFlowRunID,
		t.CreatedPos, t.CreatedAt, t.UpdatedAt, t.StreamVersion}, nil
}

func (h historyRow) copyValues() ([]any, error) {
	return []any{h.StreamID, h.Version, h.StreamType, h.FlowRunID, h.Position, h.TransactionID, h.EventType,
		h.FromType, h.FromName, h.ToType, h.ToName, h.Message, h.Actor, h.Reason, h.At}, nil
}

// execRows runs sql with rows as one JSON array; when want >= 0 the
// statement must touch exactly that many rows (else the read model already
// held them: a double apply).
func execRows[T any](ctx context.Context, tx pgx.Tx, what, sql string, rows []T, want int) error {
	if len(rows) == 0 {
		return nil
	}
	doc, err := json.Marshal(rows)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", what, err)
	}
	tag, err := tx.Exec(ctx, sql, doc)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if want >= 0 && tag.RowsAffected() != int64(want) {
		return fmt.Errorf("%s: %d of %d rows written: the read model is out of step with the log", what, tag.RowsAffected(), want)
	}
	return nil
}
