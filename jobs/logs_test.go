package jobs_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

// A task that prints more than the worker's log volume cap runs to its end;
// its output over the cap is dropped and one last line says how much.
func TestLogVolumeCap(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, jobs.WorkerOptions{MaxLogBytes: 1000})
	// 500 lines of exactly 50 bytes (newline included): 20 fit in the cap.
	loud := sh("loud", `i=0; while [ $i -lt 500 ]; do printf '%05d %043d\n' $i 0; i=$((i+1)); done; echo '"finished"' > "$ORDO_RESULT_PATH"`)
	quiet := sh("quiet", `echo one; echo two >&2`)
	fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "logs", Tasks: []domain.TaskSpec{loud, quiet}}, nil).ID)
	if fr.State.Type != domain.Completed {
		t.Fatalf("run ended %s (%s), want COMPLETED: the task runs on past the cap", fr.State.Type, fr.State.Message)
	}
	if got := string(b.tasks(t, fr)["loud"].run.Result); got != `"finished"` {
		t.Errorf("the loud task's result is %s: it did not run to its end", got)
	}
	byTask := logsByTask(t, b, fr)

	var output []string
	var capLines []jobs.LogLine
	for _, l := range byTask["loud"] {
		switch {
		case l.Stream == jobs.StreamStdout:
			output = append(output, l.Message)
		case strings.Contains(l.Message, "log volume cap"):
			capLines = append(capLines, l)
		}
	}
	if len(output) != 20 || output[0] != fmt.Sprintf("%05d %043d", 0, 0) || output[19] != fmt.Sprintf("%05d %043d", 19, 0) {
		t.Errorf("stored %d output lines (%q ... ), want the first 20", len(output), output[:min(len(output), 1)])
	}
	if len(capLines) != 1 {
		t.Fatalf("%d lines about the cap, want exactly one: %+v", len(capLines), capLines)
	}
	c := capLines[0]
	if want := "480 more lines (24000 bytes) of output were dropped"; c.Stream != jobs.StreamSystem || c.Level != "WARN" || !strings.Contains(c.Message, want) || !strings.Contains(c.Message, "1000 bytes") {
		t.Errorf("the cap line is %s/%s %q, want a system warning that says %q and names the cap", c.Stream, c.Level, c.Message, want)
	}
	if last := byTask["loud"][len(byTask["loud"])-1]; last.ID != c.ID {
		t.Errorf("the last line of the loud task is %q, want the cap line", last.Message)
	}

	// The cap is per attempt: the quiet task next to it keeps all its lines.
	var quietOut []string
	for _, l := range byTask["quiet"] {
		if l.Stream != jobs.StreamSystem {
			quietOut = append(quietOut, l.Stream+":"+l.Message)
		} else if strings.Contains(l.Message, "log volume cap") {
			t.Errorf("the quiet task got a cap line: %q", l.Message)
		}
	}
	if strings.Join(quietOut, ",") != "stdout:one,stderr:two" && strings.Join(quietOut, ",") != "stderr:two,stdout:one" {
		t.Errorf("the quiet task's output: %v", quietOut)
	}
	b.validate(t)
}

// An attempt's log opens with a system line that says which attempt ran
// where, before its first line; an attempt that writes nothing and
// succeeds has no log lines (its TaskRunStarted and TaskRunCompleted events
// say the same).
func TestAttemptLogOpensWithWhereItRan(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var handlers jobs.Handlers
	handlers.Handle("silent", func(context.Context, jobs.TaskContext) (any, error) { return 1, nil })
	handlers.Handle("chatty", func(_ context.Context, tc jobs.TaskContext) (any, error) {
		tc.Logger.Info("fitting")
		return 2, nil
	})
	b.startWorker(t, jobs.WorkerOptions{Name: "w1", Handlers: &handlers})
	fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "heads", Tasks: []domain.TaskSpec{
		{Name: "silent", Handler: "silent"},
		{Name: "chatty", Handler: "chatty"},
		sh("shell", `echo one`),
		sh("quiet", `true`),
	}}, nil).ID)
	if fr.State.Type != domain.Completed {
		t.Fatalf("run ended %s (%s), want COMPLETED", fr.State.Type, fr.State.Message)
	}
	byTask := map[string][]string{}
	for name, lines := range logsByTask(t, b, fr) {
		for _, l := range lines {
			byTask[name] = append(byTask[name], l.Stream+":"+l.Message)
		}
	}
	if got := byTask["silent"]; len(got) != 0 {
		t.Errorf("the handler that wrote nothing has log lines %q, want none", got)
	}
	if got := byTask["quiet"]; len(got) != 0 {
		t.Errorf("the command that wrote nothing and exited 0 has log lines %q, want none", got)
	}
	if got := byTask["shell"]; len(got) != 3 || got[2] != "system:exited with code 0" {
		t.Errorf("the log of a command that wrote a line is %q, want it to end with its exit", got)
	}
	for name, want := range map[string]string{"chatty": "fitting", "shell": "one"} {
		got := byTask[name]
		head := "system:attempt 1 of task " + name + " started on worker w1"
		if len(got) < 2 || got[0] != head || !strings.Contains(got[1], want) {
			t.Errorf("the log of %s is %q, want %q, then its line %q", name, got, head, want)
		}
	}
}

// A line longer than 64 KiB is stored in pieces of at most 64 KiB, in
// order, with nothing lost.
func TestLongLogLineSplitWhole(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, jobs.WorkerOptions{})
	fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "long", Tasks: []domain.TaskSpec{
		sh("long", `head -c 150000 /dev/zero | tr '\0' x; echo; echo after`),
	}}, nil).ID)
	if fr.State.Type != domain.Completed {
		t.Fatalf("run ended %s (%s), want COMPLETED", fr.State.Type, fr.State.Message)
	}
	var out []string
	for _, l := range logsByTask(t, b, fr)["long"] {
		if l.Stream == jobs.StreamStdout {
			out = append(out, l.Message)
		}
	}
	if len(out) < 3 || out[len(out)-1] != "after" {
		t.Fatalf("%d stdout lines; want the long line's pieces, then after", len(out))
	}
	pieces := out[:len(out)-1]
	for i, p := range pieces {
		if len(p) > 64<<10 {
			t.Errorf("piece %d is %d bytes, more than 64 KiB", i, len(p))
		}
	}
	if whole := strings.Join(pieces, ""); whole != strings.Repeat("x", 150000) {
		t.Errorf("the pieces join to %d bytes, want the 150,000 x the task printed", len(whole))
	}
}

// logsByTask reads the stored log lines of the run, by task name, in order.
func logsByTask(t *testing.T, b testBundle, fr domain.FlowRun) map[string][]jobs.LogLine {
	t.Helper()
	lines, err := jobs.ReadLogs(t.Context(), b.pool, fr.ID, 0, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	names := map[uuid.UUID]string{}
	for name, id := range fr.TaskRunIDs {
		names[id] = name
	}
	byTask := map[string][]jobs.LogLine{}
	for _, l := range lines {
		byTask[names[l.TaskRunID]] = append(byTask[names[l.TaskRunID]], l)
	}
	return byTask
}
