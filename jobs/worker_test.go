package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
	"github.com/ordoflow/ordo/riverjob"
)

func TestDiamondFlowCompletes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, jobs.WorkerOptions{Concurrency: 4})
	flow := domain.FlowSpec{Name: "diamond", Tasks: []domain.TaskSpec{
		sh("a", `echo "a says hi"; echo "a warns" >&2; echo '{"n": 1}' > "$ORDO_RESULT_PATH"`),
		sh("b", `sleep 0.4; echo '"from b"' > "$ORDO_RESULT_PATH"`, "a"),
		sh("c", `sleep 0.4; echo "$ORDO_PARAMETERS" > "$ORDO_RESULT_PATH"`, "a"),
		sh("d", `printf '%s' "$ORDO_INPUTS" > "$ORDO_RESULT_PATH"`, "b", "c"),
	}}
	flow.Tasks[2].Parameters = map[string]any{"extra": true}
	fr := b.create(t, flow, map[string]any{"table": "houses"})
	if fr.State.Type != domain.Pending {
		t.Fatalf("a run due now is %s, want PENDING", fr.State.Type)
	}

	fr = b.wait(t, fr.ID)
	if fr.State.Type != domain.Completed {
		t.Fatalf("flow run ended %s (%s), want COMPLETED", fr.State.Type, fr.State.Message)
	}
	tasks := b.tasks(t, fr)
	var inputs map[string]any
	if err := json.Unmarshal(tasks["d"].run.Result, &inputs); err != nil {
		t.Fatalf("d's result %s: %v", tasks["d"].run.Result, err)
	}
	want := map[string]any{"b": "from b", "c": map[string]any{"table": "houses", "extra": true}}
	if !reflect.DeepEqual(inputs, want) {
		t.Errorf("d saw ORDO_INPUTS %v, want %v", inputs, want)
	}
	if string(fr.Result) != string(tasks["d"].run.Result) {
		t.Errorf("flow run result %s, want the single sink's %s", fr.Result, tasks["d"].run.Result)
	}

	// b and c ran at the same time.
	span := func(name string) (time.Time, time.Time) {
		h := tasks[name]
		return h.of("TaskRunStarted")[0].RecordedAt, h.of("TaskRunCompleted")[0].RecordedAt
	}
	bs, be := span("b")
	cs, ce := span("c")
	if !bs.Before(ce) || !cs.Before(be) {
		t.Errorf("b ran %v-%v and c ran %v-%v: they did not overlap", bs, be, cs, ce)
	}
	_, ae := span("a")
	ds, _ := span("d")
	if bs.Before(ae) || ds.Before(be) || ds.Before(ce) {
		t.Error("a task started before its upstream completed")
	}

	// The output lines are in the logs, by stream, before the run ended.
	lines, err := jobs.ReadLogs(t.Context(), b.pool, fr.ID, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, l := range lines {
		if l.TaskRunID == fr.TaskRunIDs["a"] {
			got[l.Message] = l.Stream
		}
	}
	if got["a says hi"] != "stdout" || got["a warns"] != "stderr" {
		t.Errorf("a's log lines: %v", got)
	}
	b.validate(t)
}

func TestRetries(t *testing.T) {
	t.Parallel()

	t.Run("RetriesThenCompletes", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{})
		task := sh("flaky", `echo "attempt $ORDO_ATTEMPT"; [ "$ORDO_ATTEMPT" -ge 3 ]`)
		task.Retries, task.RetryDelaySeconds = 3, domain.RetryDelays{1}
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "flaky", Tasks: []domain.TaskSpec{task}}, nil).ID)
		if fr.State.Type != domain.Completed {
			t.Fatalf("flow run ended %s (%s), want COMPLETED", fr.State.Type, fr.State.Message)
		}
		h := b.tasks(t, fr)["flaky"]
		starts := h.of("TaskRunStarted")
		if len(starts) != 3 || len(h.of("TaskRunRetryScheduled")) != 2 {
			t.Fatalf("%d attempts and %d retries, want 3 and 2", len(starts), len(h.of("TaskRunRetryScheduled")))
		}
		// Each retry waits its delay after the failure; how late past it
		// the next attempt starts is the lateness benchmark's to measure,
		// not a loaded test machine's to judge.
		retries := h.of("TaskRunRetryScheduled")
		for i := 1; i < len(starts); i++ {
			gap := starts[i].RecordedAt.Sub(retries[i-1].RecordedAt)
			t.Logf("attempt %d started %v after attempt %d failed", i+1, gap, i)
			if gap < 900*time.Millisecond {
				t.Errorf("attempt %d started %v after attempt %d failed, want at least its 1 s delay", i+1, gap, i)
			}
		}
		b.validate(t)
	})

	t.Run("FailsForGood", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{})
		bad := sh("bad", `echo "cannot reach the database"; exit 3`)
		bad.Retries = 1
		flow := domain.FlowSpec{Name: "failing", Tasks: []domain.TaskSpec{
			bad, sh("next", "true", "bad"), sh("last", "true", "next"), sh("other", "true"),
		}}
		fr := b.wait(t, b.create(t, flow, nil).ID)
		if fr.State.Type != domain.Failed || !strings.Contains(fr.State.Message, "task bad failed") {
			t.Fatalf("flow run ended %s (%q), want FAILED naming task bad", fr.State.Type, fr.State.Message)
		}
		tasks := b.tasks(t, fr)
		h := tasks["bad"]
		if n := len(h.of("TaskRunStarted")); n != 2 {
			t.Errorf("bad ran %d times, want 2", n)
		}
		f := h.run.LastFailure
		if h.run.State.Type != domain.Failed || f == nil || f.ExitCode == nil || *f.ExitCode != 3 {
			t.Fatalf("bad is %s with failure %+v, want FAILED with exit code 3", h.run.State.Type, f)
		}
		if !strings.Contains(strings.Join(f.LogTail, "\n"), "cannot reach the database") {
			t.Errorf("log tail %q lacks the task's output", f.LogTail)
		}
		for _, name := range []string{"next", "last"} {
			d := tasks[name]
			c := d.of("TaskRunCancelled")
			if d.run.State.Name != domain.NameNotRun || len(c) != 1 || c[0].Metadata.Reason != "upstream task bad failed" {
				t.Errorf("%s is %s/%s (%+v), want CANCELLED NotRun because upstream task bad failed", name, d.run.State.Type, d.run.State.Name, c)
			}
		}
		if tasks["other"].run.State.Type != domain.Completed {
			t.Errorf("the independent task is %s, want COMPLETED", tasks["other"].run.State.Type)
		}
		b.validate(t)
	})
}

// TestWideFanOutFanIn runs many parallel tasks into one sink: completions
// share transactions (group commit) and the sink sees every input once.
func TestWideFanOutFanIn(t *testing.T) {
	t.Parallel()
	const width = 300
	var handlers jobs.Handlers
	handlers.Handle("id", func(ctx context.Context, tc jobs.TaskContext) (any, error) { return tc.TaskName, nil })
	handlers.Handle("count", func(ctx context.Context, tc jobs.TaskContext) (any, error) { return len(tc.Inputs), nil })
	b := setup(t)
	b.startWorker(t, jobs.WorkerOptions{Handlers: &handlers, Concurrency: 50})
	flow := domain.FlowSpec{Name: "wide"}
	sink := domain.TaskSpec{Name: "sink", Handler: "count"}
	for i := range width {
		name := fmt.Sprintf("t%03d", i)
		flow.Tasks = append(flow.Tasks, domain.TaskSpec{Name: name, Handler: "id"})
		sink.DependsOn = append(sink.DependsOn, name)
	}
	flow.Tasks = append(flow.Tasks, sink)
	fr := b.wait(t, b.create(t, flow, nil).ID)
	if fr.State.Type != domain.Completed || string(fr.Result) != fmt.Sprint(width) {
		t.Fatalf("flow run ended %s with result %s, want COMPLETED with %d inputs", fr.State.Type, fr.Result, width)
	}
	var completions, txs int
	err := b.pool.QueryRow(t.Context(), `
SELECT count(*), count(DISTINCT transaction_id) FROM events WHERE type = 'TaskRunCompleted'`).Scan(&completions, &txs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d completions in %d transactions", completions, txs)
	if completions != width+1 || txs >= completions {
		t.Errorf("%d completions in %d transactions: want %d, batched", completions, txs, width+1)
	}
	b.validate(t)
}

func TestLogsAreNotified(t *testing.T) {
	t.Parallel()
	b := setup(t)
	conn, err := b.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(t.Context(), "LISTEN "+jobs.LogsChannel); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(context.Background(), "UNLISTEN *") //nolint:errcheck
	b.startWorker(t, jobs.WorkerOptions{})
	fr := b.create(t, domain.FlowSpec{Name: "talk", Tasks: []domain.TaskSpec{sh("t", "echo hello")}}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	n, err := conn.Conn().WaitForNotification(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n.Payload != fr.ID.String() {
		t.Errorf("notification payload %q, want the flow run id %s", n.Payload, fr.ID)
	}
	b.wait(t, fr.ID)
}

// TestFinishedJobsAreDeleted: a task run's River job is deleted with the
// transaction that records its outcome, and a commit tried again after a
// lost connection takes a job that is gone, or no longer running, as the
// sign that its first try went through.
func TestFinishedJobsAreDeleted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := b.startWorker(t, jobs.WorkerOptions{Concurrency: 4})
	fr := b.create(t, domain.FlowSpec{Name: "two", Tasks: []domain.TaskSpec{
		{Name: "a", Command: []string{"true"}}, {Name: "b", Command: []string{"true"}, DependsOn: []string{"a"}},
	}}, nil)
	if fr = b.wait(t, fr.ID); fr.State.Type != domain.Completed {
		t.Fatalf("run ended %s (%s)", fr.State.Type, fr.State.Message)
	}
	if n := b.count(t, `SELECT count(*) FROM river_job WHERE args ->> 'flow_run_id' = $1`, fr.ID.String()); n != 0 {
		t.Errorf("%d River jobs of the completed run left, want none", n)
	}

	// River's completions of the deleted jobs went through the worker's
	// pilot, which left them out; a job the worker skips without deleting
	// it (its task run does not exist) is still completed by River.
	var stale int64
	if err := b.pool.QueryRow(t.Context(), `
INSERT INTO river_job (args, kind, max_attempts, queue, state)
VALUES (jsonb_build_object('task_run_id', gen_random_uuid(), 'flow_run_id', gen_random_uuid(), 'attempt', 1), $1, 25, $2, 'available')
RETURNING id`, riverjob.KindTaskRun, domain.DefaultWorkQueue).Scan(&stale); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(t.Context(), `SELECT pg_notify('river_insert', json_build_object('queue', $1::text)::text)`, domain.DefaultWorkQueue); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		state := ""
		if err := b.pool.QueryRow(t.Context(), `SELECT state FROM river_job WHERE id = $1`, stale).Scan(&state); err != nil {
			t.Fatal(err)
		}
		pending, leftOut := jobs.DeletedJobs(w)
		if state == "completed" && pending == 0 && leftOut >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("skipped job %s, want completed; %d deleted jobs whose completion River has not sent, want 0; %d completions left out, want the 2 tasks'", state, pending, leftOut)
		}
		time.Sleep(20 * time.Millisecond)
	}

	var running, gone, discarded int64
	for _, id := range []*int64{&running, &gone, &discarded} {
		if err := b.pool.QueryRow(t.Context(), `
INSERT INTO river_job (args, kind, max_attempts, queue, state, attempt, attempted_at)
VALUES ('{}', 'test', 1, 'q', 'running', 1, now()) RETURNING id`).Scan(id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.pool.Exec(t.Context(), `DELETE FROM river_job WHERE id = $1`, gone); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(t.Context(), `UPDATE river_job SET state = 'discarded', finalized_at = now() WHERE id = $1`, discarded); err != nil {
		t.Fatal(err)
	}
	tx, err := b.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(t.Context())
	landed, err := jobs.CommittedEarlier(t.Context(), tx, []int64{running, gone, discarded})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[int64]bool{gone: true, discarded: true}; !reflect.DeepEqual(landed, want) {
		t.Errorf("committed earlier: %v, want %v (running %d, gone %d, discarded %d)", landed, want, running, gone, discarded)
	}
}

// TestSlotFreeWhileOutcomeCommits: a worker's slot takes the next task as
// soon as a task's handler returned, while its outcome is still being
// recorded. With concurrency 1, task b runs although a's outcome cannot
// commit yet (its run's progress row is locked by another transaction);
// once the lock goes, both outcomes are recorded and the run completes.
func TestSlotFreeWhileOutcomeCommits(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ran := make(chan string, 2)
	var handlers jobs.Handlers
	handlers.Handle("note", func(_ context.Context, tc jobs.TaskContext) (any, error) {
		ran <- tc.TaskName
		return tc.TaskName, nil
	})
	fr := b.create(t, domain.FlowSpec{Name: "two", Tasks: []domain.TaskSpec{
		{Name: "a", Handler: "note"}, {Name: "b", Handler: "note"},
	}}, nil)

	lock, err := b.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(context.Background())
	if _, err := lock.Exec(t.Context(), `SELECT 1 FROM flow_run_progress WHERE flow_run_id = $1 FOR UPDATE`, fr.ID); err != nil {
		t.Fatal(err)
	}
	b.startWorker(t, jobs.WorkerOptions{Concurrency: 1, Handlers: &handlers})
	for range 2 {
		select {
		case <-ran:
		case <-time.After(10 * time.Second):
			t.Fatal("the second task did not run while the first one's outcome waited to commit")
		}
	}
	if got := b.flowRun(t, fr.ID); got.State.Type.Terminal() {
		t.Fatalf("run ended %s while its progress row was locked", got.State.Type)
	}
	if err := lock.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := b.wait(t, fr.ID); got.State.Type != domain.Completed {
		t.Fatalf("run ended %s (%s), want COMPLETED", got.State.Type, got.State.Message)
	}
	b.validate(t)
}

// TestOutcomeThatCannotBeRecordedGoesBack: when a task's outcome cannot be
// recorded (here PostgreSQL refuses the event), its job goes back to the
// queue, as River does with a job whose work failed: the worker takes it
// again, finds the attempt started and not ended, and records it as
// crashed, so the run ends instead of hanging with its task running.
func TestOutcomeThatCannotBeRecordedGoesBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.pool.Exec(t.Context(), `
CREATE FUNCTION refuse_completions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'completions refused by the test';
END $$;
CREATE TRIGGER refuse_completions BEFORE INSERT ON events
    FOR EACH ROW WHEN (NEW.type = 'TaskRunCompleted') EXECUTE FUNCTION refuse_completions();`); err != nil {
		t.Fatal(err)
	}
	var handlers jobs.Handlers
	handlers.Handle("ok", func(context.Context, jobs.TaskContext) (any, error) { return "done", nil })
	fr := b.create(t, domain.FlowSpec{Name: "refused", Tasks: []domain.TaskSpec{{Name: "a", Handler: "ok"}}}, nil)
	b.startWorker(t, jobs.WorkerOptions{Concurrency: 2, Handlers: &handlers})
	fr = b.wait(t, fr.ID)
	if fr.State.Type != domain.Crashed {
		t.Fatalf("run ended %s (%s), want CRASHED", fr.State.Type, fr.State.Message)
	}
	failed := b.tasks(t, fr)["a"].of("TaskRunFailed")
	if len(failed) != 1 || !failed[0].Event.(domain.TaskRunFailed).Crashed || failed[0].Event.(domain.TaskRunFailed).Attempt != 1 {
		t.Errorf("a's TaskRunFailed events %v, want one: attempt 1 crashed", failed)
	}
	b.validate(t)
}
