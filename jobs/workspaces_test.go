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

	done := b.create(t, domain.FlowSpec{Name: "writes", Tasks: []domain.TaskSpec{
		sh("write", `mkdir -p "$ORDO_WORKSPACE/data" && echo 1 > "$ORDO_WORKSPACE/data/out.txt"`),
		sh("read", `cat "$ORDO_WORKSPACE/data/out.txt"`, "write"),
	}}, nil)
	if fr := b.wait(t, done.ID); fr.State.Type != domain.Completed {
		t.Fatalf("run ended %s (%s): the second task did not find the first one's file", fr.State.Type, fr.State.Message)
	}
	ended := time.Now()
	doneDir := filepath.Join(b.workspace, done.ID.String())
	running := b.create(t, domain.FlowSpec{Name: "long", Tasks: []domain.TaskSpec{sleeper("sleep")}}, nil)
	runningDir := filepath.Join(b.workspace, running.ID.String())
	readPid(t, filepath.Join(runningDir, "sleep.pid"))

	waitUntil(t, 10*time.Second, "the ended run's workspace is removed", func() bool {
		_, err := os.Stat(doneDir)
		return os.IsNotExist(err)
	})
	if kept := time.Since(ended); kept < 500*time.Millisecond {
		t.Errorf("the workspace was removed %v after its run ended, before the retention of 500ms", kept)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("a workspace whose removal was cut short is still there (%v)", err)
	}
	time.Sleep(time.Second) // sweeps while the other run goes on past the retention
	for _, dir := range []string{runningDir, stranger, other} {
		if _, err := os.Stat(filepath.Join(dir)); err != nil {
			t.Errorf("%s: %v, want it kept", dir, err)
		}
	}

	if _, err := b.svc.RunCancel(t.Context(), running.ID, "token:alice"); err != nil {
		t.Fatal(err)
	}
	if fr := b.wait(t, running.ID); fr.State.Type != domain.Cancelled {
		t.Fatalf("run ended %s, want CANCELLED", fr.State.Type)
	}
	waitUntil(t, 10*time.Second, "the cancelled run's workspace is removed", func() bool {
		_, err := os.Stat(runningDir)
		return os.IsNotExist(err)
	})
}
