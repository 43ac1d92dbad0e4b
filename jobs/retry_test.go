package jobs_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

// compact returns JSON without insignificant spaces.
func compact(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return b.String()
}

// countLines returns how many lines a file has (0 when it does not exist).
func countLines(t *testing.T, path string) int {
	t.Helper()
	raw, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(raw), "\n")
}

func TestRunRetry(t *testing.T) {
	t.Parallel()

	t.Run("RerunsOnlyWhatFailed", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{Concurrency: 4})
		dir := t.TempDir()
		ran := func(name string) string {
			return `echo "$ORDO_ATTEMPT" >> ` + filepath.Join(dir, name+".runs") + `; `
		}
		// load -> train -> report, and an independent docs task; train fails
		// until the file "fixed" exists.
		flow := domain.FlowSpec{Name: "pipeline", Tasks: []domain.TaskSpec{
			sh("load", ran("load")+`echo '{"rows": 3}' > "$ORDO_RESULT_PATH"`),
			sh("train", ran("train")+`[ -f `+filepath.Join(dir, "fixed")+` ] && printf '%s' "$ORDO_INPUTS" > "$ORDO_RESULT_PATH"`, "load"),
			sh("report", ran("report")+`printf '%s' "$ORDO_INPUTS" > "$ORDO_RESULT_PATH"`, "train"),
			sh("docs", ran("docs")+"true"),
		}}
		fr := b.wait(t, b.create(t, flow, nil).ID)
		if fr.State.Type != domain.Failed {
			t.Fatalf("first run ended %s, want FAILED", fr.State.Type)
		}
		if err := os.WriteFile(filepath.Join(dir, "fixed"), nil, 0o600); err != nil {
			t.Fatal(err)
		}

		retried, err := b.svc.RunRetry(t.Context(), fr.ID, "token:alice")
		if err != nil {
			t.Fatal(err)
		}
		if retried.State.Type != domain.Scheduled || retried.State.Name != domain.NameAwaitingRetry {
			t.Errorf("a retried run is %s/%s, want SCHEDULED/AwaitingRetry", retried.State.Type, retried.State.Name)
		}
		fr = b.wait(t, fr.ID)
		if fr.State.Type != domain.Completed {
			t.Fatalf("retried run ended %s (%s), want COMPLETED", fr.State.Type, fr.State.Message)
		}
		if fr.RunCount != 2 {
			t.Errorf("run_count %d, want 2", fr.RunCount)
		}
		for name, want := range map[string]int{"load": 1, "docs": 1, "train": 2, "report": 1} {
			if got := countLines(t, filepath.Join(dir, name+".runs")); got != want {
				t.Errorf("%s ran %d times, want %d", name, got, want)
			}
		}
		tasks := b.tasks(t, fr)
		if got := compact(t, tasks["train"].run.Result); got != `{"load":{"rows":3}}` {
			t.Errorf("train saw inputs %s, want the first run's load result", got)
		}
		if got := compact(t, fr.Result); got != `{"docs":null,"report":{"train":{"load":{"rows":3}}}}` {
			t.Errorf("run result %s", got)
		}
		if starts := tasks["train"].of("TaskRunStarted"); len(starts) != 2 || starts[1].Event.(domain.TaskRunStarted).Attempt != 2 {
			t.Errorf("train's attempts: %+v, want attempt 2 after the retry", starts)
		}
		if len(tasks["report"].of("TaskRunReset")) != 1 || len(tasks["load"].of("TaskRunReset")) != 0 {
			t.Error("the retry reset the wrong task runs")
		}
		envs, _ := b.store.ReadStream(t.Context(), b.pool, fr.ID, 0)
		var names []string
		for _, e := range envs {
			if r, ok := e.Event.(domain.FlowRunRetried); ok {
				names = r.TaskNames
				if e.Metadata.Actor != "token:alice" {
					t.Errorf("FlowRunRetried recorded by %q", e.Metadata.Actor)
				}
			}
		}
		if strings.Join(names, ",") != "train,report" {
			t.Errorf("FlowRunRetried names %v, want [train report]", names)
		}
		_, err = b.svc.RunRetry(t.Context(), fr.ID, "token:alice")
		if domain.ErrorCode(err) != domain.CodeConflict {
			t.Errorf("retrying a completed run: %v, want a conflict", err)
		}
		b.validate(t)
	})

	t.Run("AfterCancel", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{Concurrency: 4})
		dir := t.TempDir()
		gate := filepath.Join(dir, "go")
		// "wait" sleeps until the gate file exists: the first time it is
		// cancelled while it waits.
		flow := domain.FlowSpec{Name: "gated", Tasks: []domain.TaskSpec{
			sh("first", `echo '"one"' > "$ORDO_RESULT_PATH"`),
			sh("wait", `while [ ! -f `+gate+` ]; do sleep 0.05; done`, "first"),
			sh("last", "true", "wait"),
		}}
		fr := b.create(t, flow, nil)
		waitUntil(t, time.Minute, "wait starts", func() bool {
			return b.taskEvents(t, fr, "wait").run.State.Type == domain.Running
		})
		if _, err := b.svc.RunCancel(t.Context(), fr.ID, "token:test"); err != nil {
			t.Fatal(err)
		}
		if fr = b.wait(t, fr.ID); fr.State.Type != domain.Cancelled {
			t.Fatalf("run ended %s, want CANCELLED", fr.State.Type)
		}
		if err := os.WriteFile(gate, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := b.svc.RunRetry(t.Context(), fr.ID, "token:test"); err != nil {
			t.Fatal(err)
		}
		if fr = b.wait(t, fr.ID); fr.State.Type != domain.Completed {
			t.Fatalf("retried run ended %s (%s), want COMPLETED", fr.State.Type, fr.State.Message)
		}
		tasks := b.tasks(t, fr)
		if n := len(tasks["first"].of("TaskRunStarted")); n != 1 {
			t.Errorf("first ran %d times, want once", n)
		}
		if n := len(tasks["last"].of("TaskRunStarted")); n != 1 {
			t.Errorf("last ran %d times, want once (it never ran before the retry)", n)
		}
		b.validate(t)
	})

	t.Run("RunningRunIsConflict", func(t *testing.T) {
		t.Parallel()
		b := setup(t) // no worker
		fr := b.create(t, domain.FlowSpec{Name: "x", Tasks: []domain.TaskSpec{sh("a", "true")}}, nil)
		if _, err := b.svc.RunRetry(t.Context(), fr.ID, "token:test"); domain.ErrorCode(err) != domain.CodeConflict {
			t.Errorf("retrying a pending run: %v, want a conflict", err)
		}
	})
}
