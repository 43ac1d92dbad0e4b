// Package projtest writes event sequences straight into the log for tests
// of the read side: flow runs and task runs going through their states
// without the execution engine. Test code only; it must never be imported
// by non-test code.
package projtest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// Log appends events to streams, keeping each stream's version.
type Log struct {
	tb       testing.TB
	store    *eventstore.Store
	versions map[uuid.UUID]int64
}

// NewLog returns a writer on store.
func NewLog(tb testing.TB, store *eventstore.Store) *Log {
	return &Log{tb: tb, store: store, versions: map[uuid.UUID]int64{}}
}

// Event is one event for one stream.
type Event struct {
	Stream uuid.UUID
	Event  domain.Event
	Meta   domain.Metadata
}

// Append appends events, in one transaction, and fails the test on error.
func (l *Log) Append(events ...Event) []domain.Envelope {
	l.tb.Helper()
	var appends []eventstore.Append
	next := map[uuid.UUID]int64{}
	for _, e := range events {
		v, ok := next[e.Stream]
		if !ok {
			v = l.versions[e.Stream]
		}
		appends = append(appends, eventstore.Append{StreamID: e.Stream, ExpectedVersion: v, Events: []domain.Event{e.Event}, Metadata: e.Meta})
		next[e.Stream] = v + 1
	}
	// consecutive events of one stream with the same metadata go in one
	// Append; each Append is its own statement, run in order
	var grouped []eventstore.Append
	for _, a := range appends {
		if n := len(grouped); n > 0 && grouped[n-1].StreamID == a.StreamID && grouped[n-1].Metadata == a.Metadata {
			grouped[n-1].Events = append(grouped[n-1].Events, a.Events...)
			continue
		}
		grouped = append(grouped, a)
	}
	var envs []domain.Envelope
	err := l.store.InTx(context.Background(), func(tx pgx.Tx) error {
		for _, a := range grouped {
			got, err := l.store.Append(context.Background(), tx, a)
			if err != nil {
				return err
			}
			envs = append(envs, got...)
		}
		return nil
	})
	if err != nil {
		l.tb.Fatalf("projtest: append: %v", err)
	}
	for id, v := range next {
		l.versions[id] = v
	}
	return envs
}

// Run is a flow run written by CreateRun.
type Run struct {
	ID    uuid.UUID
	Tasks map[string]uuid.UUID
	log   *Log
}

// RunSpec describes a run to create; zero fields get defaults.
type RunSpec struct {
	Name           string
	DeploymentID   uuid.UUID
	DeploymentName string
	WorkQueue      string
	Tags           []string
	Parameters     map[string]any
	ScheduledAt    time.Time
	Flow           domain.FlowSpec // defaults to Diamond()
	Actor          string
}

// Diamond is a flow of four tasks: load, then left and right, then join.
func Diamond() domain.FlowSpec {
	return domain.FlowSpec{Name: "diamond", Tasks: []domain.TaskSpec{
		{Name: "load", Command: []string{"true"}, Retries: 2},
		{Name: "left", Command: []string{"true"}, DependsOn: []string{"load"}},
		{Name: "right", Command: []string{"true"}, DependsOn: []string{"load"}},
		{Name: "join", Command: []string{"true"}, DependsOn: []string{"left", "right"}},
	}}
}

// CreateRun appends FlowRunCreated and a TaskRunCreated per task, in one
// transaction.
func (l *Log) CreateRun(s RunSpec) *Run {
	l.tb.Helper()
	if s.Flow.Name == "" {
		s.Flow = Diamond()
	}
	if s.DeploymentID == uuid.Nil {
		s.DeploymentID = uuid.New()
	}
	if s.DeploymentName == "" {
		s.DeploymentName = "dep"
	}
	if s.WorkQueue == "" {
		s.WorkQueue = "default"
	}
	if s.Name == "" {
		s.Name = "run-" + uuid.NewString()[:8]
	}
	if s.ScheduledAt.IsZero() {
		s.ScheduledAt = time.Now().UTC().Truncate(time.Microsecond)
	}
	if s.Actor == "" {
		s.Actor = "test"
	}
	run := &Run{ID: uuid.New(), Tasks: map[string]uuid.UUID{}, log: l}
	for _, t := range s.Flow.Tasks {
		run.Tasks[t.Name] = uuid.New()
	}
	meta := domain.Metadata{Actor: s.Actor, Reason: "created by test"}
	events := []Event{{Stream: run.ID, Meta: meta, Event: domain.FlowRunCreated{
		Name: s.Name, DeploymentID: s.DeploymentID, DeploymentName: s.DeploymentName, DeploymentVersion: 1,
		WorkQueue: s.WorkQueue, Tags: s.Tags, Parameters: s.Parameters, Flow: s.Flow, TaskRunIDs: run.Tasks, ScheduledAt: s.ScheduledAt,
	}}}
	for _, t := range s.Flow.Tasks {
		events = append(events, Event{Stream: run.Tasks[t.Name], Meta: meta, Event: domain.TaskRunCreated{FlowRunID: run.ID, Task: t}})
	}
	l.Append(events...)
	return run
}

// Flow appends events to the flow run's own stream.
func (r *Run) Flow(events ...domain.Event) []domain.Envelope {
	r.log.tb.Helper()
	evs := make([]Event, len(events))
	for i, e := range events {
		evs[i] = Event{Stream: r.ID, Event: e, Meta: domain.Metadata{Actor: "scheduler"}}
	}
	return r.log.Append(evs...)
}

// Task appends events to one task run's stream.
func (r *Run) Task(name string, events ...domain.Event) []domain.Envelope {
	r.log.tb.Helper()
	evs := make([]Event, len(events))
	for i, e := range events {
		evs[i] = Event{Stream: r.Tasks[name], Event: e, Meta: domain.Metadata{Actor: "worker:w1", Reason: "task " + name}}
	}
	return r.log.Append(evs...)
}

// TaskOutOfOrder appends first, then second, to one task run's stream,
// second in a transaction that got its id before first's did: the log's
// order, (transaction_id, position), then holds second before first, as
// appends before they kept each stream's versions in log order could
// write. second goes in without the store's checks.
func (r *Run) TaskOutOfOrder(name string, first, second domain.Event) {
	r.log.tb.Helper()
	ctx := context.Background()
	fail := func(err error) {
		r.log.tb.Helper()
		if err != nil {
			r.log.tb.Fatalf("projtest: out of order: %v", err)
		}
	}
	older, err := r.log.store.Pool().Begin(ctx)
	fail(err)
	defer older.Rollback(ctx) //nolint:errcheck // after the commit, a no-op
	_, err = older.Exec(ctx, `SELECT pg_current_xact_id()`)
	fail(err)
	r.Task(name, first)
	stream := r.Tasks[name]
	data, err := json.Marshal(second)
	fail(err)
	meta, err := json.Marshal(domain.Metadata{Actor: "worker:w1", Reason: "task " + name})
	fail(err)
	_, err = older.Exec(ctx, `INSERT INTO events (stream_id, stream_type, version, type, data, metadata) VALUES ($1, $2, $3, $4, $5, $6)`,
		stream, second.StreamType(), r.log.versions[stream]+1, second.EventType(), data, meta)
	fail(err)
	fail(older.Commit(ctx))
	r.log.versions[stream]++
}

// Succeed runs the task's next attempt to completion with result.
func (r *Run) Succeed(name string, attempt int, result any) []domain.Envelope {
	r.log.tb.Helper()
	b, _ := json.Marshal(result)
	return r.Task(name,
		domain.TaskRunStarted{Attempt: attempt, Worker: "w1"},
		domain.TaskRunCompleted{Attempt: attempt, Result: b})
}

// Complete runs the whole diamond to completion, load retrying once.
func (r *Run) Complete() {
	r.log.tb.Helper()
	r.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
	exit := 3
	r.Task("load",
		domain.TaskRunStarted{Attempt: 1, Worker: "w1"},
		domain.TaskRunRetryScheduled{AttemptFailure: domain.AttemptFailure{Attempt: 1, Error: "connection refused", ExitCode: &exit}, RetryAt: time.Now().Add(time.Second)})
	r.Succeed("load", 2, map[string]any{"rows": 10})
	r.Succeed("left", 1, "L")
	r.Succeed("right", 1, "R")
	r.Succeed("join", 1, 42)
	r.Flow(domain.FlowRunCompleted{Result: json.RawMessage(`42`)})
}
