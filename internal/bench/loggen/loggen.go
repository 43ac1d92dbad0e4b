// Package loggen writes synthetic event logs of ML pipeline runs straight
// into a database's events table, for the benchmarks that need a large log
// (replay, growth, lateness under load, the automation consumer) and the
// Go benchmarks that profile what reads it.
package loggen

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
)

// Gen writes realistic runs of the five-task ML pipeline of the user story
// (completed, retried, cached, failed, cancelled and crashed) straight into
// the events table with COPY, as Ordo would have appended them.
type Gen struct {
	rows  [][]any
	at    time.Time
	runs  int
	Total int // events written so far
}

// New returns a generator whose first run is at the start of 2026.
func New() *Gen {
	return &Gen{at: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

var eventColumns = []string{"stream_id", "stream_type", "version", "type", "data", "metadata", "recorded_at"}

// Load appends runs until the generator has written at least n events, in
// transactions of 50,000 events. Progress, when set, is called after about
// every tenth of them with the events written and their rate so far.
func (g *Gen) Load(ctx context.Context, pool *pgxpool.Pool, n int, progress func(total int, perSecond float64)) error {
	const batch = 50_000
	began, from := time.Now(), g.Total
	nextReport := g.Total + max(n/10, batch)
	for g.Total < n {
		g.rows = g.rows[:0]
		for len(g.rows) < batch && g.Total+len(g.rows) < n {
			g.run()
		}
		copied, err := pool.CopyFrom(ctx, pgx.Identifier{"events"}, eventColumns, pgx.CopyFromRows(g.rows))
		if err != nil {
			return fmt.Errorf("copy events: %w", err)
		}
		g.Total += int(copied)
		if g.Total >= nextReport && g.Total < n {
			if progress != nil {
				progress(g.Total, float64(g.Total-from)/time.Since(began).Seconds())
			}
			nextReport += max(n/10, batch)
		}
	}
	return nil
}

// pipeline is the flow of the user story: load, preprocess (cached),
// split, train, evaluate, each after the one before.
var pipeline = domain.FlowSpec{Name: "ml-pipeline", Tasks: []domain.TaskSpec{
	{Name: "load_data", Command: []string{"python3", "examples/ml-pipeline/load_data.py"}, Retries: 3, RetryDelaySeconds: domain.RetryDelays{5}, TimeoutSeconds: 60},
	{Name: "preprocess", Command: []string{"python3", "examples/ml-pipeline/preprocess.py"}, DependsOn: []string{"load_data"}, Cache: &domain.CachePolicy{Key: "inputs", ExpirationSeconds: 3600}},
	{Name: "split", Command: []string{"python3", "examples/ml-pipeline/split.py"}, DependsOn: []string{"preprocess"}},
	{Name: "train", Command: []string{"python3", "examples/ml-pipeline/train.py"}, DependsOn: []string{"split"}, Tags: []string{"gpu"}},
	{Name: "evaluate", Command: []string{"python3", "examples/ml-pipeline/evaluate.py"}, DependsOn: []string{"train"}},
}}

var deploymentID = uuid.MustParse("0196a0f2-7c1e-7b6a-9d51-3f2a1c0e4b77")

func (g *Gen) emit(stream uuid.UUID, version *int64, e domain.Event, meta domain.Metadata) {
	data, err := json.Marshal(e)
	if err != nil {
		panic(err)
	}
	m, _ := json.Marshal(meta)
	*version++
	g.at = g.at.Add(1500 * time.Microsecond)
	g.rows = append(g.rows, []any{stream, e.StreamType(), *version, e.EventType(), data, m, g.at})
}

// run appends one flow run and its task runs, its outcome chosen by its
// number: 60% complete, 15% retry load_data, 10% use the cache, 8% fail,
// 4% are cancelled, 3% crash.
func (g *Gen) run() {
	g.runs++
	k := g.runs % 100
	id := uuid.Must(uuid.NewV7())
	ids := map[string]uuid.UUID{}
	var tasks []uuid.UUID
	for _, t := range pipeline.Tasks {
		tid := uuid.Must(uuid.NewV7())
		ids[t.Name] = tid
		tasks = append(tasks, tid)
	}
	corr := domain.Metadata{Actor: "scheduler", CorrelationID: id.String()}
	worker := domain.Metadata{Actor: "worker:gpu-1"}
	var fv int64
	tv := make([]int64, len(tasks))
	g.emit(id, &fv, domain.FlowRunCreated{
		Name: fmt.Sprintf("model-training-%07d", g.runs), DeploymentID: deploymentID, DeploymentName: "model_training_validation",
		DeploymentVersion: 1, WorkQueue: "ml", Tags: []string{"prod"}, Parameters: map[string]any{"table": "houses", "test_size": 0.2},
		Flow: pipeline, TaskRunIDs: ids, ScheduledAt: g.at.Truncate(time.Second), AutoScheduled: true,
	}, corr)
	for i, t := range pipeline.Tasks {
		g.emit(tasks[i], &tv[i], domain.TaskRunCreated{FlowRunID: id, Task: t}, corr)
	}
	g.emit(id, &fv, domain.FlowRunPending{}, corr)
	started := false
	succeed := func(i int, attempt int, result any) {
		g.emit(tasks[i], &tv[i], domain.TaskRunStarted{Attempt: attempt, Worker: "gpu-1"}, worker)
		if !started {
			g.emit(id, &fv, domain.FlowRunStarted{}, corr)
			started = true
		}
		r, _ := json.Marshal(result)
		g.emit(tasks[i], &tv[i], domain.TaskRunCompleted{Attempt: attempt, Result: r}, worker)
	}
	notRun := func(from int) {
		for i := from; i < len(tasks); i++ {
			g.emit(tasks[i], &tv[i], domain.TaskRunCancelled{NotRun: true}, corr)
		}
	}
	exit := 1
	switch {
	case k >= 60 && k < 75: // load_data fails once, then succeeds
		g.emit(tasks[0], &tv[0], domain.TaskRunStarted{Attempt: 1, Worker: "gpu-1"}, worker)
		g.emit(id, &fv, domain.FlowRunStarted{}, corr)
		started = true
		g.emit(tasks[0], &tv[0], domain.TaskRunRetryScheduled{AttemptFailure: domain.AttemptFailure{
			Attempt: 1, Error: "could not connect to server: Connection refused", ExitCode: &exit, LogTail: []string{"psycopg2.OperationalError"},
		}, RetryAt: g.at.Add(5 * time.Second)}, worker)
		succeed(0, 2, map[string]any{"rows": 20640 + k})
	default:
		succeed(0, 1, map[string]any{"rows": 20640 + k})
	}
	if k >= 75 && k < 85 {
		g.emit(tasks[1], &tv[1], domain.TaskRunCached{Result: json.RawMessage(`{"path": "features.parquet"}`), CacheKey: "preprocess-3f2a", SourceTaskRunID: deploymentID}, corr)
	} else {
		succeed(1, 1, map[string]any{"path": "features.parquet"})
	}
	succeed(2, 1, map[string]any{"train": 16512, "validation": 4128})
	switch {
	case k >= 85 && k < 93: // train fails for good
		g.emit(tasks[3], &tv[3], domain.TaskRunStarted{Attempt: 1, Worker: "gpu-1"}, worker)
		g.emit(tasks[3], &tv[3], domain.TaskRunFailed{AttemptFailure: domain.AttemptFailure{Attempt: 1, Error: "exit status 1", ExitCode: &exit}}, worker)
		notRun(4)
		g.emit(id, &fv, domain.FlowRunFailed{Message: "task train failed: exit status 1"}, corr)
	case k >= 93 && k < 97: // cancelled while training
		g.emit(tasks[3], &tv[3], domain.TaskRunStarted{Attempt: 1, Worker: "gpu-1"}, worker)
		g.emit(id, &fv, domain.FlowRunCancelling{}, domain.Metadata{Actor: "token:alice", Reason: "wrong parameters"})
		g.emit(tasks[3], &tv[3], domain.TaskRunCancelled{}, worker)
		notRun(4)
		g.emit(id, &fv, domain.FlowRunCancelled{}, corr)
	case k >= 97: // the worker dies while training
		g.emit(tasks[3], &tv[3], domain.TaskRunStarted{Attempt: 1, Worker: "gpu-1"}, worker)
		g.emit(tasks[3], &tv[3], domain.TaskRunFailed{AttemptFailure: domain.AttemptFailure{Attempt: 1, Error: "worker gpu-1 stopped", Crashed: true}}, corr)
		notRun(4)
		g.emit(id, &fv, domain.FlowRunCrashed{Message: "task train crashed"}, corr)
	default:
		succeed(3, 1, map[string]any{"model": "/workspace/" + id.String() + "/model.pkl", "rmse": 0.4711})
		succeed(4, 1, map[string]any{"r2": 0.83})
		g.emit(id, &fv, domain.FlowRunCompleted{Result: json.RawMessage(`{"r2": 0.83}`)}, corr)
	}
}
