package jobs_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

// Each attempt of a command task gets a result file of its own that
// nothing else uses; the worker reads it and leaves nothing behind, whether
// the task wrote a result, wrote none, wrote one and failed, or wrote an
// invalid one.
func TestResultFilesArePerAttemptAndRemoved(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, jobs.WorkerOptions{})
	// every task prints its result path, so that the test can see they differ
	show := `echo "$ORDO_RESULT_PATH"; test ! -e "$ORDO_RESULT_PATH" || { echo "the result file exists before the task ran" >&2; exit 9; }; `
	tasks := []domain.TaskSpec{
		sh("wrote", show+`echo '{"n": 1}' > "$ORDO_RESULT_PATH"`),
		sh("none", show+`true`),
		sh("failed", show+`echo '{"n": 2}' > "$ORDO_RESULT_PATH"; exit 1`),
		sh("invalid", show+`echo 'nope' > "$ORDO_RESULT_PATH"`),
		sh("retried", show+`echo '{"n": 3}' > "$ORDO_RESULT_PATH"; test "$ORDO_ATTEMPT" = 2`),
	}
	tasks[4].Retries = 1
	fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "results", Tasks: tasks}, nil).ID)
	runs := b.tasks(t, fr)
	if got := strings.ReplaceAll(string(runs["wrote"].run.Result), " ", ""); got != `{"n":1}` {
		t.Errorf("result %s, want {\"n\":1}", got)
	}
	if got := runs["retried"].run; got.State.Type != domain.Completed || strings.ReplaceAll(string(got.Result), " ", "") != `{"n":3}` {
		t.Errorf("the retried task ended %s with %s", got.State.Type, got.Result)
	}
	for name, want := range map[string]domain.StateType{"none": domain.Completed, "failed": domain.Failed, "invalid": domain.Failed} {
		if got := runs[name].run.State.Type; got != want {
			t.Errorf("task %s ended %s (%s), want %s", name, got, runs[name].run.State.Message, want)
		}
	}
	paths := map[string]bool{}
	for name, lines := range logsByTask(t, b, fr) {
		for _, l := range lines {
			if l.Stream == jobs.StreamStdout {
				if paths[l.Message] {
					t.Errorf("task %s was given the result path %s that another attempt had", name, l.Message)
				}
				paths[l.Message] = true
				if _, err := os.Stat(l.Message); !os.IsNotExist(err) {
					t.Errorf("the result file %s of task %s is left behind (%v)", l.Message, name, err)
				}
			}
			if l.Stream == jobs.StreamStderr {
				t.Errorf("task %s: %s", name, l.Message)
			}
		}
	}
	if len(paths) != 6 {
		t.Errorf("%d result paths for 6 attempts: %v", len(paths), paths)
	}
	// nothing else is left where they were
	for p := range paths {
		entries, err := os.ReadDir(filepath.Dir(p))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if len(names) != 0 {
			t.Errorf("left in %s: %s", filepath.Dir(p), strings.Join(names, ", "))
		}
		break
	}
	b.validate(t)
}
