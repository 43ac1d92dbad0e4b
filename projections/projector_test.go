package projections

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/projections/projtest"
)

type testBundle struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
	log   *projtest.Log
}

func setup(t *testing.T) testBundle {
	t.Helper()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, domain.NewRegistry())
	t.Cleanup(store.Close)
	return testBundle{pool: pool, store: store, log: projtest.NewLog(t, store)}
}

func newProjector(t *testing.T, b testBundle, opts ProjectorOptions) *Projector {
	t.Helper()
	p, err := NewProjector(b.store, opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func catchUp(t *testing.T, p *Projector) int {
	t.Helper()
	n, err := p.CatchUp(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// snapshot returns every read-model table as JSON text, rows in key order.
func snapshot(t *testing.T, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	keys := map[string]string{
		"deployments": "id", "flow_runs": "id", "task_runs": "id",
		"task_run_attempts": "task_run_id, attempt", "state_history": "stream_id, version",
	}
	out := map[string]string{}
	for table, key := range keys {
		var s string
		if err := pool.QueryRow(context.Background(), `SELECT coalesce(json_agg(t ORDER BY `+key+`), '[]')::text FROM `+table+` t`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		out[table] = s
	}
	return out
}

func jsonEqual(got []byte, want string) bool {
	var a, b any
	return json.Unmarshal(got, &a) == nil && json.Unmarshal([]byte(want), &b) == nil && reflect.DeepEqual(a, b)
}

func TestProjectionDiamond(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	run := b.log.CreateRun(projtest.RunSpec{Name: "nightly", Tags: []string{"prod", "ml"}, Parameters: map[string]any{"table": "houses"}})
	run.Complete()
	p := newProjector(t, b, ProjectorOptions{BatchSize: 7}) // batches split streams
	if n := catchUp(t, p); n != 5+2+2+4*2+1 {
		t.Fatalf("applied %d events", n)
	}
	got, err := NewReader(b.store).RunGet(ctx, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State.Type != domain.Completed || got.RunCount != 1 || got.StartedAt == nil || got.EndedAt == nil || string(got.Result) != "42" {
		t.Errorf("flow run: %+v", got)
	}
	if len(got.TaskRuns) != 4 || got.TaskRuns[0].TaskName != "load" || got.TaskRuns[3].TaskName != "join" {
		t.Fatalf("task runs: %+v", got.TaskRuns)
	}
	load := got.TaskRuns[0]
	if load.RunCount != 2 || load.State.Name != domain.NameCompleted || load.Error != nil || !jsonEqual(load.Result, `{"rows":10}`) {
		t.Errorf("load: %+v", load)
	}
	var attempts []string
	rows, _ := b.pool.Query(ctx, `SELECT outcome || ':' || coalesce(exit_code::text, '-') || ':' || worker FROM task_run_attempts WHERE task_run_id = $1 ORDER BY attempt`, run.Tasks["load"])
	for rows.Next() {
		var s string
		_ = rows.Scan(&s)
		attempts = append(attempts, s)
	}
	if len(attempts) != 2 || attempts[0] != "failed:3:w1" || attempts[1] != "completed:-:w1" {
		t.Errorf("attempts of load: %v", attempts)
	}
	var transitions int
	_ = b.pool.QueryRow(ctx, `SELECT count(*) FROM state_transitions WHERE flow_run_id = $1`, run.ID).Scan(&transitions)
	if transitions != 18 {
		t.Errorf("state_transitions shows %d rows, want 18", transitions)
	}
	var from, to string
	_ = b.pool.QueryRow(ctx, `SELECT from_state, to_state FROM state_transitions WHERE stream_id = $1 AND event_type = 'TaskRunRetryScheduled'`, run.Tasks["load"]).Scan(&from, &to)
	if from != "RUNNING/Running" || to != "SCHEDULED/AwaitingRetry" {
		t.Errorf("retry shows %s -> %s", from, to)
	}
}

// TestProjectionCrashSafety kills the projector in the middle of a batch,
// starts another, and checks that the result equals a rebuild from zero.
func TestProjectionCrashSafety(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := range 60 {
		run := b.log.CreateRun(projtest.RunSpec{Name: "run"})
		if i%3 != 0 {
			run.Complete()
		} else {
			run.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
			run.Succeed("load", 1, i)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var batches atomic.Int32
	var committed atomic.Int64 // events of the batches before the crash
	crashing := newProjector(t, b, ProjectorOptions{BatchSize: 50, beforeCommit: func(_ context.Context, envs []domain.Envelope) {
		if batches.Add(1) == 6 {
			cancel() // dies inside the sixth batch's transaction
			return
		}
		committed.Add(int64(len(envs)))
	}})
	err := crashing.Run(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v", err)
	}
	stored, err := readCheckpoint(context.Background(), b.pool)
	if err != nil {
		t.Fatal(err)
	}
	if stored == (eventstore.Checkpoint{}) || stored != crashing.Applied() {
		t.Fatalf("after the crash the checkpoint is %v, the projector applied %v", stored, crashing.Applied())
	}
	var applied int
	_ = b.pool.QueryRow(context.Background(), `SELECT count(*) FROM state_history`).Scan(&applied)
	// Batches hold at most 50 events, fewer when other transactions on the
	// server hold the readable prefix of the log back.
	if want := committed.Load(); int64(applied) != want || want == 0 {
		t.Fatalf("%d events applied before the crash, want the %d of the 5 committed batches", applied, want)
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	restarted := newProjector(t, b, ProjectorOptions{BatchSize: 50})
	done := make(chan error, 1)
	go func() { done <- restarted.Run(ctx2) }()
	waitCtx, cancelWait := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelWait()
	if err := restarted.Sync(waitCtx); err != nil {
		t.Fatal(err)
	}
	cancel2()
	<-done
	resumed := snapshot(t, b.pool)

	if _, err := Rebuild(context.Background(), b.pool, b.store); err != nil {
		t.Fatal(err)
	}
	rebuilt := snapshot(t, b.pool)
	for table, want := range rebuilt {
		if got := resumed[table]; got != want {
			i := 0
			for i < len(got) && i < len(want) && got[i] == want[i] {
				i++
			}
			from := max(0, i-300)
			t.Errorf("%s after crash and restart differs from a rebuild at byte %d:\n...%.400s\nvs\n...%.400s", table, i, got[from:], want[from:])
		}
	}
	var total, history int
	_ = b.pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE stream_type <> 'deployment'`).Scan(&total)
	_ = b.pool.QueryRow(context.Background(), `SELECT count(*) FROM state_history`).Scan(&history)
	if total != history {
		t.Errorf("state_history has %d rows for %d run events", history, total)
	}
}

func TestProjectionFollowsAndWaitFor(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := newProjector(t, b, ProjectorOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = p.Run(ctx) }()
	r := NewReader(b.store)
	for i := range 5 {
		run := b.log.CreateRun(projtest.RunSpec{})
		envs := run.Flow(domain.FlowRunPending{})
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		if err := p.WaitFor(wctx, envs[len(envs)-1].Position); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		wcancel()
		got, err := r.RunGet(ctx, run.ID)
		if err != nil || got.State.Type != domain.Pending {
			t.Fatalf("run %d right after WaitFor: %v %+v", i, err, got.State)
		}
	}
	lag, err := p.Lag(ctx)
	if err != nil || lag != 0 {
		t.Fatalf("lag %d, %v", lag, err)
	}
}

func TestProjectionGapStops(t *testing.T) {
	t.Parallel()
	b := setup(t)
	run := b.log.CreateRun(projtest.RunSpec{})
	p := newProjector(t, b, ProjectorOptions{})
	catchUp(t, p)
	if _, err := b.pool.Exec(context.Background(), `DELETE FROM flow_runs WHERE id = $1`, run.ID); err != nil {
		t.Fatal(err)
	}
	run.Flow(domain.FlowRunPending{})
	before := p.Applied()
	if _, err := p.CatchUp(context.Background()); err == nil {
		t.Fatal("a damaged read model was not noticed")
	}
	if p.Applied() != before {
		t.Fatal("the checkpoint moved past an event that was not applied")
	}
}

// TestProjectionFoldsAStreamWrittenOutOfOrder reads a log that holds a task
// run's version 3 before its version 2, as appends could write before they
// kept each stream's versions in log order: the projector, a replay and a
// run's audit trail fold the stream in version order, and verify finds the
// log and the read models clean.
func TestProjectionFoldsAStreamWrittenOutOfOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	run := b.log.CreateRun(projtest.RunSpec{})
	run.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
	run.TaskOutOfOrder("load", domain.TaskRunStarted{Attempt: 1, Worker: "w1"}, domain.TaskRunCompleted{Attempt: 1, Result: json.RawMessage(`7`)})
	for _, name := range []string{"left", "right", "join"} {
		run.Succeed(name, 1, name)
	}
	run.Flow(domain.FlowRunCompleted{Result: json.RawMessage(`42`)})
	var inverted bool
	if err := b.pool.QueryRow(ctx, `
SELECT array_agg(version ORDER BY transaction_id, position) = '{1,3,2}' FROM events WHERE stream_id = $1`, run.Tasks["load"]).Scan(&inverted); err != nil || !inverted {
		t.Fatalf("the log does not hold version 3 of load before version 2 (%v)", err)
	}

	p := newProjector(t, b, ProjectorOptions{BatchSize: 1}) // version 3 alone in its batch
	catchUp(t, p)
	reader := NewReader(b.store)
	got, err := reader.RunGet(ctx, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	load := got.TaskRuns[0]
	if load.TaskName != "load" || load.State.Type != domain.Completed || load.RunCount != 1 || !jsonEqual(load.Result, `7`) {
		t.Errorf("load: %+v", load)
	}
	var history []string
	rows, err := b.pool.Query(ctx, `SELECT version || ':' || from_state || '>' || to_state FROM state_transitions t JOIN state_history h USING (position) WHERE h.stream_id = $1 ORDER BY version`, run.Tasks["load"])
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		_ = rows.Scan(&s)
		history = append(history, s)
	}
	if want := []string{"1:(new)>PENDING/Pending", "2:PENDING/Pending>RUNNING/Running", "3:RUNNING/Running>COMPLETED/Completed"}; !reflect.DeepEqual(history, want) {
		t.Errorf("load's history %v, want %v", history, want)
	}

	events, err := reader.RunEvents(ctx, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if e.StreamID == run.Tasks["load"] && e.Version == 3 && (e.FromState == nil || e.FromState.Type != domain.Running) {
			t.Errorf("the audit trail has version 3 of load from %+v, want RUNNING", e.FromState)
		}
	}

	report, err := Verify(ctx, b.pool, b.store, ReplayOptions{})
	if err != nil || !report.Clean {
		t.Fatalf("verify: %v\n%s", err, report.String())
	}
	before := snapshot(t, b.pool)
	if _, err := Replay(ctx, b.pool, b.store, ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, b.pool); !reflect.DeepEqual(after, before) {
		t.Errorf("a replay does not rebuild what the projector built:\nprojector %v\nreplay    %v", before, after)
	}
}
