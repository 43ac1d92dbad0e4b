package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
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
	// ahead reads the events of a stream with versions between after and
	// before, both excluded, in version order: those an event came before
	// in a log written before appends kept each stream's versions in log
	// order (see outOfOrder). Nil: such an event is a gap.
	ahead func(stream uuid.UUID, after, before int64) ([]domain.Envelope, error)
	// Rows are carved from slabs that grow with the batch: a replay folds
	// hundreds of thousands of them, one allocation each was a tenth of
	// its CPU.
	flowSlab    slab[flowRunRow]
	taskSlab    slab[taskRunRow]
	attemptSlab slab[attemptRow]
	timeSlab    slab[time.Time]
	// fromStrings are the from_type and from_name values of history rows,
	// one pointer per distinct string: a new one for every row was two
	// allocations an event.
	fromStrings map[string]*string
	// metricFlows are the flow runs whose metrics (the union of their task
	// runs') an event of the batch may have changed.
	metricFlows map[uuid.UUID]bool
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
	loadedAt  int64 // the version the table held, for a row not new
	resultSet bool  // an event of the batch set or cleared the result
	taskCount int
	metrics   map[string]float64 // set by Replay; the projector derives them in SQL
	createdAt time.Time
	updatedAt time.Time
}

type taskRunRow struct {
	t         domain.TaskRun
	isNew     bool
	loadedAt  int64 // the version the table held, for a row not new
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

		metricFlows: map[uuid.UUID]bool{},
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
			row.loadedAt = r.Version
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
			row.loadedAt = t.Version
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

// outOfOrder handles an event that does not follow version have, the one
// the rows hold for its stream. A log written before appends kept each
// stream's versions in log order can hold an event before the version it
// follows: the versions between are read from the stream and folded
// first, and the event is skipped when its own turn comes, the rows
// holding it already. skip says to pass over env; otherwise the rows now
// hold the version before it. Anything else (versions missing, or found
// earlier in the log, as when a read model was damaged) is a gap.
func (b *batch) outOfOrder(env domain.Envelope, have int64) (skip bool, err error) {
	if b.ahead == nil {
		return false, gapError(env, have)
	}
	at := eventstore.CheckpointOf(env)
	if env.Version <= have {
		// folded already if a later version came before it
		later, err := b.ahead(env.StreamID, env.Version, have+1)
		if err != nil {
			return false, fmt.Errorf("read the versions after event %d: %w", env.Position, err)
		}
		for _, l := range later {
			if eventstore.CheckpointOf(l).Less(at) {
				return true, nil
			}
		}
		return false, gapError(env, have)
	}
	missing, err := b.ahead(env.StreamID, have, env.Version)
	if err != nil {
		return false, fmt.Errorf("read the versions event %d follows: %w", env.Position, err)
	}
	if int64(len(missing)) != env.Version-have-1 {
		return false, gapError(env, have)
	}
	for _, m := range missing {
		if !at.Less(eventstore.CheckpointOf(m)) {
			return false, gapError(env, have)
		}
	}
	return false, b.fold(missing)
}

// readAhead is a batch's ahead: the stream's events read through q.
func readAhead(ctx context.Context, store *eventstore.Store, q eventstore.Querier) func(uuid.UUID, int64, int64) ([]domain.Envelope, error) {
	return func(stream uuid.UUID, after, before int64) ([]domain.Envelope, error) {
		envs, err := store.ReadStream(ctx, q, stream, after)
		if err != nil {
			return nil, err
		}
		n := 0
		for n < len(envs) && envs[n].Version < before {
			n++
		}
		return envs[:n], nil
	}
}

// fold applies the events, in log order, to the rows in memory.
func (b *batch) fold(envs []domain.Envelope) error {
	for _, env := range envs {
		at := env.RecordedAt
		switch env.StreamType {
		case domain.StreamDeployment:
			row := b.deploys[env.StreamID]
			if row == nil && env.Version != 1 {
				if _, err := b.outOfOrder(env, 0); err != nil {
					return err
				}
				row = b.deploys[env.StreamID]
			}
			if row == nil {
				row = &deploymentRow{d: domain.Deployment{ID: env.StreamID}}
				b.deploys[env.StreamID] = row
				b.deployOrder = append(b.deployOrder, env.StreamID)
			}
			if env.Version != row.d.Stream+1 {
				if skip, err := b.outOfOrder(env, row.d.Stream); err != nil {
					return err
				} else if skip {
					continue
				}
			}
			row.d = row.d.Apply(env.Event, at)
			row.d.Stream = env.Version
			row.deleted = row.d.Deleted

		case domain.StreamFlowRun:
			row := b.flows[env.StreamID]
			if row == nil && env.Version != 1 {
				if _, err := b.outOfOrder(env, 0); err != nil {
					return err
				}
				row = b.flows[env.StreamID]
			}
			if row == nil {
				row = carve(&b.flowSlab)
				*row = flowRunRow{isNew: true, createdAt: at, r: domain.FlowRun{ID: env.StreamID}}
				b.flows[env.StreamID] = row
				b.flowOrder = append(b.flowOrder, env.StreamID)
			}
			if env.Version != row.r.Version+1 {
				if skip, err := b.outOfOrder(env, row.r.Version); err != nil {
					return err
				} else if skip {
					continue
				}
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
			if row == nil && env.Version != 1 {
				if _, err := b.outOfOrder(env, 0); err != nil {
					return err
				}
				row = b.tasks[env.StreamID]
			}
			if row == nil {
				row = carve(&b.taskSlab)
				*row = taskRunRow{isNew: true, createdAt: at, position: env.Position, t: domain.TaskRun{ID: env.StreamID}}
				b.tasks[env.StreamID] = row
				b.taskOrder = append(b.taskOrder, env.StreamID)
			}
			if env.Version != row.t.Version+1 {
				if skip, err := b.outOfOrder(env, row.t.Version); err != nil {
					return err
				} else if skip {
					continue
				}
			}
			before := row.t
			row.t = row.t.Apply(env.Event, at)
			row.t.Version, row.updatedAt = env.Version, at
			switch e := env.Event.(type) {
			case domain.TaskRunCompleted:
				row.resultSet = true
				if len(e.Metrics) > 0 {
					b.metricFlows[row.t.FlowRunID] = true
				}
			case domain.TaskRunCached:
				row.resultSet = true
				if len(e.Metrics) > 0 {
					b.metricFlows[row.t.FlowRunID] = true
				}
			case domain.TaskRunReset:
				row.resultSet = true
				b.metricFlows[row.t.FlowRunID] = true
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

		case domain.StreamRetention, domain.StreamAutomation, domain.StreamAutomationFiring:
			// records of what ordo prune archived, and automations (kept
			// by their own commands and consumer): nothing to project

		default:
			return fmt.Errorf("event %d: unknown stream type %q", env.Position, env.StreamType)
		}
	}
	return nil
}

// slab hands out rows from arrays that it allocates twice the size of the
// last (from 8 to 1024 rows) when one is used up, so that a small batch
// allocates little and a replay few times.
type slab[T any] struct {
	free []T
	size int
}

// carve returns a new zero row of s.
func carve[T any](s *slab[T]) *T {
	if len(s.free) == 0 {
		s.size = min(max(2*s.size, 8), 1024)
		s.free = make([]T, s.size)
	}
	e := &s.free[0]
	s.free = s.free[1:]
	return e
}

// foldAttempt keeps task_run_attempts: a row per started attempt, closed by
// the event that ends it.
func (b *batch) foldAttempt(env domain.Envelope, before, after domain.TaskRun) {
	// each time stored gets a pointer of its own, carved from a slab
	at := func() *time.Time {
		p := carve(&b.timeSlab)
		*p = env.RecordedAt
		return p
	}
	get := func(attempt int) *attemptRow {
		k := attemptKey{after.ID, attempt}
		a := b.attempts[k]
		if a == nil {
			a = carve(&b.attemptSlab)
			*a = attemptRow{TaskRunID: after.ID, Attempt: attempt, FlowRunID: after.FlowRunID}
			b.attempts[k] = a
			b.attemptKeys = append(b.attemptKeys, k)
		}
		return a
	}
	fail := func(f domain.AttemptFailure) {
		a := get(f.Attempt)
		a.EndedAt, a.Error, a.ExitCode = at(), &f.Error, f.ExitCode
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
		a.Worker, a.StartedAt, a.Outcome = e.Worker, at(), "running"
	case domain.TaskRunCompleted:
		a := get(e.Attempt)
		a.EndedAt, a.Outcome = at(), "completed"
	case domain.TaskRunRetryScheduled:
		fail(e.AttemptFailure)
	case domain.TaskRunFailed:
		fail(e.AttemptFailure)
	case domain.TaskRunCancelled:
		if before.State.Type == domain.Running && before.Attempt > 0 {
			a := get(before.Attempt)
			a.EndedAt, a.Outcome = at(), "cancelled"
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
		h.FromType, h.FromName = b.fromString(string(before.Type)), b.fromString(before.Name)
	}
	b.history = append(b.history, h)
}

// fromString returns the batch's one pointer to s.
func (b *batch) fromString(s string) *string {
	if p, ok := b.fromStrings[s]; ok {
		return p
	}
	if b.fromStrings == nil {
		b.fromStrings = map[string]*string{}
	}
	p := &s
	b.fromStrings[s] = p
	return p
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
		ID                uuid.UUID          `json:"id"`
		Name              string             `json:"name"`
		FlowName          string             `json:"flow_name"`
		DeploymentID      uuid.UUID          `json:"deployment_id"`
		DeploymentName    string             `json:"deployment_name"`
		DeploymentVersion int                `json:"deployment_version"`
		WorkQueue         string             `json:"work_queue"`
		Tags              []string           `json:"tags"`
		Parameters        map[string]any     `json:"parameters"`
		StateType         string             `json:"state_type"`
		StateName         string             `json:"state_name"`
		StateTimestamp    time.Time          `json:"state_timestamp"`
		StateMessage      string             `json:"state_message"`
		ScheduledAt       time.Time          `json:"scheduled_at"`
		StartedAt         *time.Time         `json:"started_at"`
		EndedAt           *time.Time         `json:"ended_at"`
		RunCount          int                `json:"run_count"`
		ParentTaskRunID   *uuid.UUID         `json:"parent_task_run_id"`
		ParentFlowRunID   *uuid.UUID         `json:"parent_flow_run_id"`
		AutoScheduled     bool               `json:"auto_scheduled"`
		ResultSet         bool               `json:"result_set"`
		Result            json.RawMessage    `json:"result"`
		Metrics           map[string]float64 `json:"metrics"`
		TaskCount         int                `json:"task_count"`
		CreatedAt         time.Time          `json:"created_at"`
		UpdatedAt         time.Time          `json:"updated_at"`
		StreamVersion     int64              `json:"stream_version"`
	}
	taskRunOut struct {
		ID             uuid.UUID          `json:"id"`
		FlowRunID      uuid.UUID          `json:"flow_run_id"`
		TaskName       string             `json:"task_name"`
		Kind           string             `json:"kind"`
		DependsOn      []string           `json:"depends_on"`
		Tags           []string           `json:"tags"`
		Task           *domain.TaskSpec   `json:"task"`
		StateType      string             `json:"state_type"`
		StateName      string             `json:"state_name"`
		StateTimestamp time.Time          `json:"state_timestamp"`
		StateMessage   string             `json:"state_message"`
		RunCount       int                `json:"run_count"`
		StartedAt      *time.Time         `json:"started_at"`
		EndedAt        *time.Time         `json:"ended_at"`
		RetryAt        *time.Time         `json:"retry_at"`
		ResultSet      bool               `json:"result_set"`
		Result         json.RawMessage    `json:"result"`
		Outputs        []domain.Output    `json:"outputs"`
		Metrics        map[string]float64 `json:"metrics"`
		Error          *string            `json:"error"`
		ExitCode       *int               `json:"exit_code"`
		CacheKey       *string            `json:"cache_key"`
		ChildFlowRunID *uuid.UUID         `json:"child_flow_run_id"`
		CreatedPos     int64              `json:"created_position"`
		CreatedAt      time.Time          `json:"created_at"`
		UpdatedAt      time.Time          `json:"updated_at"`
		StreamVersion  int64              `json:"stream_version"`
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

func deploymentOutOf(d domain.Deployment) deploymentOut {
	s := d.Spec
	return deploymentOut{
		ID: d.ID, Name: s.Name, Version: d.Version, Description: s.Description, WorkQueue: s.WorkQueue,
		Tags: s.Tags, Parameters: s.Parameters, Schedule: s.Schedule, Paused: d.Paused, Flow: s.Flow, Spec: s,
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, StreamVersion: d.Stream,
	}
}

func flowRunOutOf(row *flowRunRow) flowRunOut {
	r := row.r
	return flowRunOut{
		ID: r.ID, Name: r.Name, FlowName: r.Flow.Name, DeploymentID: r.DeploymentID, DeploymentName: r.DeploymentName,
		DeploymentVersion: r.DeploymentVersion, WorkQueue: r.WorkQueue, Tags: r.Tags, Parameters: r.Parameters,
		StateType: string(r.State.Type), StateName: r.State.Name, StateTimestamp: r.State.Timestamp, StateMessage: r.State.Message,
		ScheduledAt: micro(r.ScheduledAt), StartedAt: r.StartedAt, EndedAt: r.EndedAt, RunCount: r.RunCount,
		ParentTaskRunID: r.ParentTaskRunID, ParentFlowRunID: r.ParentFlowRunID, AutoScheduled: r.AutoScheduled,
		ResultSet: row.resultSet, Result: rawOrNil(r.Result), Metrics: row.metrics, TaskCount: row.taskCount,
		CreatedAt: row.createdAt, UpdatedAt: row.updatedAt, StreamVersion: r.Version,
	}
}

func taskRunOutOf(row *taskRunRow) taskRunOut {
	t := row.t
	o := taskRunOut{
		ID: t.ID, FlowRunID: t.FlowRunID, TaskName: t.Task.Name, Kind: t.Task.Kind(), DependsOn: t.Task.DependsOn, Tags: t.Task.Tags,
		StateType: string(t.State.Type), StateName: t.State.Name, StateTimestamp: t.State.Timestamp, StateMessage: t.State.Message,
		RunCount: t.Attempt, StartedAt: t.StartedAt, EndedAt: t.EndedAt,
		ResultSet: row.resultSet, Result: rawOrNil(t.Result), Outputs: t.Outputs, Metrics: t.Metrics, ChildFlowRunID: t.ChildFlowRunID, CreatedPos: row.position,
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

// Statements that write rows given as one JSON array; jsonb_to_recordset
// reads each column from the row's field of the same name.
var (
	upsertDeploymentsSQL = `
INSERT INTO deployments (` + deploymentsTable.list() + `)
SELECT ` + deploymentsTable.fromRecordset() + `
FROM jsonb_to_recordset($1::jsonb) AS u(` + deploymentsTable.recordset() + `)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, version = EXCLUDED.version, description = EXCLUDED.description, work_queue = EXCLUDED.work_queue,
    tags = EXCLUDED.tags, parameters = EXCLUDED.parameters, schedule = EXCLUDED.schedule, paused = EXCLUDED.paused,
    flow = EXCLUDED.flow, spec = EXCLUDED.spec, updated_at = EXCLUDED.updated_at, stream_version = EXCLUDED.stream_version
WHERE deployments.stream_version < EXCLUDED.stream_version`

	// resultSet says whether an event of the batch set or cleared a run's
	// result: only then is the stored result replaced.
	resultSet = column{name: "result_set", typ: "boolean"}

	updateFlowRunsSQL = `
UPDATE flow_runs f SET
    state_type = u.state_type, state_name = u.state_name, state_timestamp = u.state_timestamp, state_message = coalesce(u.state_message, ''),
    started_at = u.started_at, ended_at = u.ended_at, run_count = u.run_count,
    result = CASE WHEN u.result_set THEN u.result ELSE f.result END,
    updated_at = u.updated_at, stream_version = u.stream_version
FROM jsonb_to_recordset($1::jsonb) AS u(` + flowRunsTable.recordset(resultSet) + `)
WHERE f.id = u.id AND f.stream_version < u.stream_version`

	updateTaskRunsSQL = `
UPDATE task_runs t SET
    state_type = u.state_type, state_name = u.state_name, state_timestamp = u.state_timestamp, state_message = coalesce(u.state_message, ''),
    run_count = u.run_count, started_at = u.started_at, ended_at = u.ended_at, retry_at = u.retry_at,
    result = CASE WHEN u.result_set THEN u.result ELSE t.result END,
    outputs = CASE WHEN u.result_set THEN coalesce(u.outputs, '[]') ELSE t.outputs END,
    metrics = CASE WHEN u.result_set THEN coalesce(u.metrics, '{}') ELSE t.metrics END,
    error = u.error, exit_code = u.exit_code, cache_key = u.cache_key, child_flow_run_id = u.child_flow_run_id,
    updated_at = u.updated_at, stream_version = u.stream_version
FROM jsonb_to_recordset($1::jsonb) AS u(` + taskRunsTable.recordset(resultSet) + `)
WHERE t.id = u.id AND t.stream_version < u.stream_version`

	// flowMetricsSQL derives the metrics of the flow runs given from their
	// task runs' (flowMetrics does the same in Go, for Replay).
	flowMetricsSQL = `
UPDATE flow_runs f SET metrics = coalesce(m.metrics, '{}')
FROM unnest($1::uuid[]) AS a(id)
LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(e.key, e.value ORDER BY t.ended_at, t.created_position) AS metrics
    FROM task_runs t, jsonb_each(t.metrics) e
    WHERE t.flow_run_id = a.id AND t.metrics <> '{}'
) m ON true
WHERE f.id = a.id AND f.metrics IS DISTINCT FROM coalesce(m.metrics, '{}')`

	upsertAttemptsSQL = `
INSERT INTO task_run_attempts AS a (` + attemptsTable.list() + `)
SELECT ` + attemptsTable.fromRecordset() + `
FROM jsonb_to_recordset($1::jsonb) AS u(` + attemptsTable.recordset() + `)
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
		upserts = append(upserts, deploymentOutOf(row.d))
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
		switch {
		case row.isNew:
			newFlows = append(newFlows, flowRunOutOf(row))
		case row.r.Version > row.loadedAt: // not when its events were folded ahead of their place
			oldFlows = append(oldFlows, flowRunOutOf(row))
		}
	}
	if err := copyRows(ctx, tx, flowRunsTable, newFlows, func(c *copyBuf, r *flowRunOut) error { return r.encode(c) }); err != nil {
		return err
	}
	if err := execRows(ctx, tx, "update flow runs", updateFlowRunsSQL, oldFlows, len(oldFlows)); err != nil {
		return err
	}

	var newTasks, oldTasks []taskRunOut
	for _, id := range b.taskOrder {
		row := b.tasks[id]
		switch {
		case row.isNew:
			newTasks = append(newTasks, taskRunOutOf(row))
		case row.t.Version > row.loadedAt: // not when its events were folded ahead of their place
			oldTasks = append(oldTasks, taskRunOutOf(row))
		}
	}
	encodeTask := func(c *copyBuf, t *taskRunOut) error {
		task, err := json.Marshal(t.Task)
		if err != nil {
			return fmt.Errorf("task run %s: encode task: %w", t.ID, err)
		}
		return t.encode(c, task)
	}
	if err := copyRows(ctx, tx, taskRunsTable, newTasks, encodeTask); err != nil {
		return err
	}
	if err := execRows(ctx, tx, "update task runs", updateTaskRunsSQL, oldTasks, len(oldTasks)); err != nil {
		return err
	}
	if len(b.metricFlows) > 0 {
		if _, err := tx.Exec(ctx, flowMetricsSQL, slices.Collect(maps.Keys(b.metricFlows))); err != nil {
			return fmt.Errorf("derive flow run metrics: %w", err)
		}
	}

	attempts := make([]*attemptRow, len(b.attemptKeys))
	for i, k := range b.attemptKeys {
		attempts[i] = b.attempts[k]
	}
	if err := execRows(ctx, tx, "upsert task run attempts", upsertAttemptsSQL, attempts, -1); err != nil {
		return err
	}
	return copyRows(ctx, tx, historyTable, b.history, func(c *copyBuf, h *historyRow) error { return h.encode(c) })
}

// copyRows inserts new rows with a binary COPY in tx: the batch holds the
// checkpoint's row lock, so no other projector writes them, and a row that
// exists already (a double apply) fails the batch on its primary key. The
// table is named as the search path finds it (Replay's catch-up writes to
// its new tables so).
func copyRows[T any](ctx context.Context, tx pgx.Tx, t table, rows []T, encode func(*copyBuf, *T) error) error {
	if len(rows) == 0 {
		return nil
	}
	n, _, err := copyIn(ctx, tx.Conn().PgConn(), t.name, t.names(), sliceSource(rows, encode), 0)
	if err != nil {
		return fmt.Errorf("insert %s: %w", t.name, err)
	}
	if n != int64(len(rows)) {
		return fmt.Errorf("insert %s: %d of %d rows written", t.name, n, len(rows))
	}
	return nil
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
