package jobs_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

// TestWorkspacesOfEndedRunsAreRemoved: a worker removes a run's workspace
// once the run has ended for longer than the retention, not while the run
// goes on, and leaves alone what is not the workspace of a run in the log.
func TestWorkspacesOfEndedRunsAreRemoved(t *testing.T) {
	t.Parallel()
	b := setup(t)
	stranger := filepath.Join(b.workspace, uuid.NewString()) // a run this log does not have
	other := filepath.Join(b.workspace, "notes")
	leftover := filepath.Join(b.workspace, ".removing-"+uuid.NewString()) // a removal cut short
	for _, dir := range []string{stranger, other, leftover} {
		if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	wo := jobs.WorkerOptions{Concurrency: 4, WorkspaceRetention: 500 * time.Millisecond}
	jobs.SetWorkspaceSweep(&wo, 50*time.Millisecond)
	b.startWorker(t, wo)

	gone := func(dir string) func() bool {
		return func() bool { _, err := os.Stat(dir); return os.IsNotExist(err) }
	}

	done := b.create(t, domain.FlowSpec{Name: "writes", Tasks: []domain.TaskSpec{
		sh("write", `mkdir -p "$ORDO_WORKSPACE/data" && echo 1 > "$ORDO_WORKSPACE/data/out.txt"`),
		sh("read", `cat "$ORDO_WORKSPACE/data/out.txt"`, "write"),
	}}, nil)
	fr := b.wait(t, done.ID)
	if fr.State.Type != domain.Completed {
		t.Fatalf("run ended %s (%s): the second task did not find the first one's file", fr.State.Type, fr.State.Message)
	}
	ended := fr.State.Timestamp // when the run's last event was recorded
	running := b.create(t, domain.FlowSpec{Name: "long", Tasks: []domain.TaskSpec{sleeper("sleep")}}, nil)
	runningDir := filepath.Join(b.workspace, running.ID.String())
	readPid(t, filepath.Join(runningDir, "sleep.pid"))
	// A run that goes on with no attempt on the worker: its task failed
	// once and waits ten minutes to be tried again.
	flaky := sh("flaky", `touch "$ORDO_WORKSPACE/tried"; exit 1`)
	flaky.Retries, flaky.RetryDelaySeconds = 1, domain.RetryDelays{600}
	waiting := b.create(t, domain.FlowSpec{Name: "waits", Tasks: []domain.TaskSpec{flaky}}, nil)
	waitingDir := filepath.Join(b.workspace, waiting.ID.String())
	waitUntil(t, time.Minute, "the flaky task waits for its retry", func() bool {
		return b.taskEvents(t, waiting, "flaky").run.State.Name == domain.NameAwaitingRetry
	})
	started := time.Now() // the running and waiting runs' last events are older than this

	waitUntil(t, time.Minute, "the ended run's workspace is removed", gone(filepath.Join(b.workspace, done.ID.String())))
	if kept := time.Since(ended); kept < 500*time.Millisecond {
		t.Errorf("the workspace was removed %v after its run ended, before the retention of 500ms", kept)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("a workspace whose removal was cut short is still there (%v)", err)
	}

	// Once the other runs' last events are older than the retention, a
	// run that ends then has its workspace removed by a sweep that saw
	// theirs too.
	waitUntil(t, time.Minute, "the retention passes", func() bool { return time.Since(started) > 500*time.Millisecond })
	later := b.create(t, domain.FlowSpec{Name: "quick", Tasks: []domain.TaskSpec{sh("q", "true")}}, nil)
	if fr := b.wait(t, later.ID); fr.State.Type != domain.Completed {
		t.Fatalf("run ended %s (%s)", fr.State.Type, fr.State.Message)
	}
	waitUntil(t, time.Minute, "the later run's workspace is removed", gone(filepath.Join(b.workspace, later.ID.String())))
	for _, dir := range []string{runningDir, waitingDir, stranger, other} {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("%s: %v, want it kept", dir, err)
		}
	}

	if _, err := b.svc.RunCancel(t.Context(), running.ID, "token:alice"); err != nil {
		t.Fatal(err)
	}
	if fr := b.wait(t, running.ID); fr.State.Type != domain.Cancelled {
		t.Fatalf("run ended %s, want CANCELLED", fr.State.Type)
	}
	waitUntil(t, time.Minute, "the cancelled run's workspace is removed", gone(runningDir))
}
