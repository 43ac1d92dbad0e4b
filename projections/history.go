package projections

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// runEvents reads a flow run's stream and its task runs' streams, in log
// order, straight from the log.
func (r *Reader) runEvents(ctx context.Context, id uuid.UUID) ([]domain.Envelope, map[uuid.UUID]string, error) {
	own, err := r.store.ReadStream(ctx, r.pool, id, 0)
	if err != nil {
		return nil, nil, err
	}
	if len(own) == 0 || own[0].StreamType != domain.StreamFlowRun {
		return nil, nil, domain.Errorf(domain.CodeNotFound, "flow run %s not found", id)
	}
	var run domain.FlowRun
	for _, env := range own {
		run = run.Apply(env.Event, env.RecordedAt)
	}
	names := make(map[uuid.UUID]string, len(run.TaskRunIDs))
	ids := make([]uuid.UUID, 0, len(run.TaskRunIDs)+1)
	ids = append(ids, id)
	for name, tid := range run.TaskRunIDs {
		names[tid] = name
		ids = append(ids, tid)
	}
	envs, err := r.store.ReadStreams(ctx, r.pool, ids)
	if err != nil {
		return nil, nil, err
	}
	return envs, names, nil
}

// RunEvents returns the audit trail of a flow run: every event of the run and
// of its task runs, in log order, each with the state of its stream before
// and after. It reads the log itself, not the read models.
func (r *Reader) RunEvents(ctx context.Context, id uuid.UUID) ([]Event, error) {
	envs, names, err := r.runEvents(ctx, id)
	if err != nil {
		return nil, err
	}
	f := newRunFold(id)
	out := make([]Event, 0, len(envs))
	for _, env := range envs {
		before, after := f.apply(env)
		e := eventOf(env)
		e.TaskName = names[env.StreamID]
		e.FlowRunID, e.FlowRunName = &id, f.run.Name
		setStates(&e, before, after)
		out = append(out, e)
	}
	return out, nil
}

// setStates sets an event's from and to states: no from state for the
// first event of a stream.
func setStates(e *Event, before, after domain.State) {
	b, a := stateOf(before), stateOf(after)
	if !before.IsZero() {
		e.FromState = &b
	}
	e.ToState = &a
}

// HistoryPoint says how far into the log to fold: up to a time, or up to a
// place in the log (an event's position or a checkpoint "TXID-POSITION").
type HistoryPoint struct {
	Time *time.Time
	Log  string
}

// RunHistory returns the flow run, with its task runs, as it was at a past
// point: its events and its task runs' events up to then, folded with the
// domain's Apply.
func (r *Reader) RunHistory(ctx context.Context, id uuid.UUID, at HistoryPoint) (History, error) {
	var cp *eventstore.Checkpoint
	if at.Log != "" {
		c, err := r.checkpointAt(ctx, "at", at.Log)
		if err != nil {
			return History{}, err
		}
		cp = &c
	}
	envs, _, err := r.runEvents(ctx, id)
	if err != nil {
		return History{}, err
	}
	f := newRunFold(id)
	var h History
	for _, env := range envs {
		if cp != nil && cp.Less(eventstore.CheckpointOf(env)) || at.Time != nil && env.RecordedAt.After(*at.Time) {
			break // the log is in order: nothing later can come before the point
		}
		f.apply(env)
		h.EventCount++
		h.At, h.Position, h.Cursor = env.RecordedAt, env.Position, eventstore.CheckpointOf(env).String()
	}
	if !f.seen[id] {
		return History{}, domain.Errorf(domain.CodeNotFound, "flow run %s did not exist yet at that point", id)
	}
	h.Run = f.flowRun()
	return h, nil
}

// runFold folds a flow run and its task runs with the domain's Apply,
// keeping when each was created and last changed.
type runFold struct {
	id      uuid.UUID
	run     domain.FlowRun
	tasks   map[uuid.UUID]domain.TaskRun
	order   []uuid.UUID
	created map[uuid.UUID]time.Time
	updated map[uuid.UUID]time.Time
	seen    map[uuid.UUID]bool
}

func newRunFold(id uuid.UUID) *runFold {
	return &runFold{
		id: id, run: domain.FlowRun{ID: id}, tasks: map[uuid.UUID]domain.TaskRun{},
		created: map[uuid.UUID]time.Time{}, updated: map[uuid.UUID]time.Time{}, seen: map[uuid.UUID]bool{},
	}
}

// apply folds one event and returns its stream's state before and after.
func (f *runFold) apply(env domain.Envelope) (before, after domain.State) {
	if !f.seen[env.StreamID] {
		f.seen[env.StreamID] = true
		f.created[env.StreamID] = env.RecordedAt
	}
	f.updated[env.StreamID] = env.RecordedAt
	if env.StreamID == f.id {
		before = f.run.State
		f.run = f.run.Apply(env.Event, env.RecordedAt)
		f.run.Version = env.Version
		return before, f.run.State
	}
	t, ok := f.tasks[env.StreamID]
	if !ok {
		t = domain.TaskRun{ID: env.StreamID}
		f.order = append(f.order, env.StreamID)
	}
	before = t.State
	t = t.Apply(env.Event, env.RecordedAt)
	t.Version = env.Version
	f.tasks[env.StreamID] = t
	return before, t.State
}

func (f *runFold) flowRun() FlowRun {
	r := f.run
	params, _ := json.Marshal(nonNilMap(r.Parameters))
	out := FlowRun{
		ID: r.ID, Name: r.Name, FlowName: r.Flow.Name, DeploymentID: r.DeploymentID, DeploymentName: r.DeploymentName,
		DeploymentVersion: r.DeploymentVersion, WorkQueue: r.WorkQueue, Tags: nonNil(r.Tags), Parameters: params,
		State: stateOf(r.State), ScheduledAt: r.ScheduledAt, StartedAt: r.StartedAt, EndedAt: r.EndedAt, RunCount: r.RunCount,
		ParentTaskRunID: r.ParentTaskRunID, ParentFlowRunID: r.ParentFlowRunID, AutoScheduled: r.AutoScheduled,
		Result: rawOrNil(r.Result), TaskCount: len(r.TaskRunIDs), CreatedAt: f.created[r.ID], UpdatedAt: f.updated[r.ID],
		TaskRuns: make([]TaskRun, 0, len(f.order)),
	}
	var metrics []metricSource
	for i, id := range f.order {
		t := f.tasks[id]
		if len(t.Metrics) > 0 && t.EndedAt != nil {
			metrics = append(metrics, metricSource{endedAt: *t.EndedAt, created: int64(i), metrics: t.Metrics})
		}
		tr := TaskRun{
			ID: t.ID, FlowRunID: t.FlowRunID, TaskName: t.Task.Name, Kind: t.Task.Kind(), State: stateOf(t.State),
			RunCount: t.Attempt, StartedAt: t.StartedAt, EndedAt: t.EndedAt, Result: rawOrNil(t.Result),
			Outputs: nonNil(t.Outputs), Metrics: nonNilMetrics(t.Metrics),
			DependsOn: nonNil(t.Task.DependsOn), Tags: nonNil(t.Task.Tags), ChildFlowRunID: t.ChildFlowRunID,
			CreatedAt: f.created[id], UpdatedAt: f.updated[id],
		}
		if !t.RetryAt.IsZero() {
			ra := t.RetryAt
			tr.RetryAt = &ra
		}
		if t.LastFailure != nil {
			tr.Error, tr.ExitCode = &t.LastFailure.Error, t.LastFailure.ExitCode
		}
		if t.CacheKey != "" {
			ck := t.CacheKey
			tr.CacheKey = &ck
		}
		out.TaskRuns = append(out.TaskRuns, tr)
	}
	out.Metrics, _ = json.Marshal(unionMetrics(metrics))
	return out
}

func eventOf(env domain.Envelope) Event {
	m := env.Metadata
	return Event{
		Position: env.Position, TransactionID: env.TransactionID, Cursor: eventstore.CheckpointOf(env).String(),
		StreamID: env.StreamID, StreamType: env.StreamType, Version: env.Version, Type: env.Type, Data: env.Data,
		Metadata:   Metadata{Actor: m.Actor, Reason: m.Reason, CausationID: m.CausationID, CorrelationID: m.CorrelationID},
		RecordedAt: env.RecordedAt,
	}
}

// EventFilter selects a page of the global log.
type EventFilter struct {
	After string   // a cursor ("TXID-POSITION", an event's cursor) or a position; "" is the start
	Types []string // event types, any of them
	Limit int      // 1..200; 0 means 50
}

// EventList returns a page of the global log in log order. Each event
// carries its cursor; next_cursor is set when the page is full.
func (r *Reader) EventList(ctx context.Context, f EventFilter) (Page[Event], error) {
	limit, err := pageSize(f.Limit)
	if err != nil {
		return Page[Event]{}, err
	}
	var after eventstore.Checkpoint
	if f.After != "" {
		if after, err = r.checkpointAt(ctx, "after", f.After); err != nil {
			return Page[Event]{}, err
		}
	}
	envs, err := r.store.ReadAllFiltered(ctx, r.pool, after, eventstore.ReadFilter{Types: f.Types}, limit)
	if err != nil {
		return Page[Event]{}, err
	}
	page := Page[Event]{Items: make([]Event, 0, len(envs))}
	for _, env := range envs {
		page.Items = append(page.Items, eventOf(env))
	}
	if err := r.describeEvents(ctx, page.Items); err != nil {
		return Page[Event]{}, err
	}
	if len(page.Items) == limit {
		c := page.Items[limit-1].Cursor
		page.NextCursor = &c
	}
	return page, nil
}

// describeEvents gives the events of flow runs and task runs what a run's
// audit trail shows (RunEvents): the run's id and name, the task's name,
// the states before and after. It folds their streams from the log, as
// the audit trail does, so that it never lags behind the events it
// describes.
func (r *Reader) describeEvents(ctx context.Context, events []Event) error {
	var ids []uuid.UUID
	seen := map[uuid.UUID]bool{}
	for _, e := range events {
		if (e.StreamType == domain.StreamFlowRun || e.StreamType == domain.StreamTaskRun) && !seen[e.StreamID] {
			seen[e.StreamID] = true
			ids = append(ids, e.StreamID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	type step struct{ before, after domain.State }
	steps := map[uuid.UUID]map[int64]step{}
	runs := map[uuid.UUID]domain.FlowRun{}
	tasks := map[uuid.UUID]domain.TaskRun{}
	fold := func(envs []domain.Envelope) {
		for _, env := range envs {
			var before, after domain.State
			switch env.StreamType {
			case domain.StreamFlowRun:
				run, ok := runs[env.StreamID]
				if !ok {
					run = domain.FlowRun{ID: env.StreamID}
				}
				before = run.State
				run = run.Apply(env.Event, env.RecordedAt)
				runs[env.StreamID], after = run, run.State
			case domain.StreamTaskRun:
				t, ok := tasks[env.StreamID]
				if !ok {
					t = domain.TaskRun{ID: env.StreamID}
				}
				before = t.State
				t = t.Apply(env.Event, env.RecordedAt)
				tasks[env.StreamID], after = t, t.State
			default:
				continue
			}
			if steps[env.StreamID] == nil {
				steps[env.StreamID] = map[int64]step{}
			}
			steps[env.StreamID][env.Version] = step{before, after}
		}
	}
	envs, err := r.store.ReadStreams(ctx, r.pool, ids)
	if err != nil {
		return err
	}
	fold(envs)
	// the runs of task runs whose run has no event on the page, for their names
	var more []uuid.UUID
	for _, t := range tasks {
		if _, ok := runs[t.FlowRunID]; !ok && t.FlowRunID != uuid.Nil && !seen[t.FlowRunID] {
			seen[t.FlowRunID] = true
			more = append(more, t.FlowRunID)
		}
	}
	if len(more) > 0 {
		envs, err := r.store.ReadStreams(ctx, r.pool, more)
		if err != nil {
			return err
		}
		fold(envs)
	}
	for i := range events {
		e := &events[i]
		st, ok := steps[e.StreamID][e.Version]
		if !ok {
			continue // a deployment's event
		}
		setStates(e, st.before, st.after)
		runID := e.StreamID
		if t, isTask := tasks[e.StreamID]; isTask {
			runID, e.TaskName = t.FlowRunID, t.Task.Name
		}
		if runID != uuid.Nil {
			e.FlowRunID = &runID
			e.FlowRunName = runs[runID].Name
		}
	}
	return nil
}
