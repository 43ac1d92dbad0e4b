package projections

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/projections/projtest"
)

func output(name string) domain.Output {
	return domain.Output{Name: name, SHA256: strings.Repeat("ab", 32), Size: 3, MediaType: "text/plain"}
}

// TestOutputsAndMetricsProjectAndReplay projects outputs and metrics in
// small batches (a completion, a cache hit, two completions in one
// transaction, a reset) and checks that the run's metrics are the union
// of its task runs', the later completion winning a name; that a replay
// rebuilds exactly the same rows; and that a run's history shows them.
func TestOutputsAndMetricsProjectAndReplay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	p := newProjector(t, b, ProjectorOptions{BatchSize: 3})
	reader := NewReader(b.store)

	run := b.log.CreateRun(projtest.RunSpec{})
	run.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
	run.Task("load", domain.TaskRunStarted{Attempt: 1, Worker: "w1"},
		domain.TaskRunCompleted{Attempt: 1, Outputs: []domain.Output{output("data/raw.csv")}, Metrics: map[string]float64{"rows": 10, "loss": 1}})
	catchUp(t, p)
	run.Task("left", domain.TaskRunCached{CacheKey: "k", SourceTaskRunID: uuid.New(), Outputs: []domain.Output{output("left.txt")}, Metrics: map[string]float64{"loss": 0.5}})
	catchUp(t, p)
	// two completions in one transaction: the same time, the order of
	// creation decides
	b.log.Append(
		projtest.Event{Stream: run.Tasks["right"], Event: domain.TaskRunStarted{Attempt: 1, Worker: "w1"}},
		projtest.Event{Stream: run.Tasks["join"], Event: domain.TaskRunStarted{Attempt: 1, Worker: "w1"}},
		projtest.Event{Stream: run.Tasks["join"], Event: domain.TaskRunCompleted{Attempt: 1, Metrics: map[string]float64{"loss": 0.25, "r2": 0.9}}},
		projtest.Event{Stream: run.Tasks["right"], Event: domain.TaskRunCompleted{Attempt: 1, Metrics: map[string]float64{"loss": 0.75}}},
	)
	catchUp(t, p)

	got, err := reader.RunGet(ctx, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(got.Metrics, `{"rows": 10, "loss": 0.25, "r2": 0.9}`) {
		t.Errorf("run metrics %s: join was created after right and wins loss", got.Metrics)
	}
	if o := got.TaskRuns[0].Outputs; len(o) != 1 || o[0] != output("data/raw.csv") || got.TaskRuns[1].Outputs[0].Name != "left.txt" || got.TaskRuns[2].Outputs == nil {
		t.Errorf("outputs: %+v", got.TaskRuns)
	}
	outs, err := reader.RunOutputs(ctx, run.ID)
	if err != nil || len(outs) != 2 || outs[0].TaskName != "load" || outs[1].Name != "left.txt" {
		t.Errorf("run outputs: %+v %v", outs, err)
	}
	if o, err := reader.TaskRunOutput(ctx, run.Tasks["load"], "data/raw.csv"); err != nil || o != output("data/raw.csv") {
		t.Errorf("one output: %+v %v", o, err)
	}
	if _, err := reader.TaskRunOutput(ctx, run.Tasks["load"], "raw.csv"); domain.ErrorCode(err) != domain.CodeNotFound {
		t.Errorf("an output not there: %v", err)
	}

	if report, err := Verify(ctx, b.pool, b.store, ReplayOptions{}); err != nil || !report.Clean {
		t.Fatalf("a rebuild differs from the projection: %v\n%s", err, report.String())
	}

	// a reset takes the task's metrics out of the run's
	run.Flow(domain.FlowRunCompleted{}, domain.FlowRunRetried{})
	run.Task("join", domain.TaskRunReset{})
	catchUp(t, p)
	got, _ = reader.RunGet(ctx, run.ID)
	if !jsonEqual(got.Metrics, `{"rows": 10, "loss": 0.75}`) {
		t.Errorf("after the reset: %s", got.Metrics)
	}
	before := snapshot(t, b.pool)
	if res, err := Replay(ctx, b.pool, b.store, ReplayOptions{}); err != nil || !res.Swapped {
		t.Fatalf("replay: %+v %v", res, err)
	}
	if after := snapshot(t, b.pool); after["flow_runs"] != before["flow_runs"] || after["task_runs"] != before["task_runs"] {
		t.Errorf("replay changed the rows:\nflow runs before %s\nafter %s\ntask runs before %s\nafter %s", before["flow_runs"], after["flow_runs"], before["task_runs"], after["task_runs"])
	}

	h, err := reader.RunHistory(ctx, run.ID, HistoryPoint{Log: strconv.FormatInt(lastPosition(t, b), 10)})
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(h.Run.Metrics, `{"rows": 10, "loss": 0.75}`) || len(h.Run.TaskRuns[0].Outputs) != 1 {
		t.Errorf("history: %s %+v", h.Run.Metrics, h.Run.TaskRuns[0])
	}
}

func lastPosition(t *testing.T, b testBundle) int64 {
	t.Helper()
	var pos int64
	if err := b.pool.QueryRow(context.Background(), `SELECT max(position) FROM events`).Scan(&pos); err != nil {
		t.Fatal(err)
	}
	return pos
}
