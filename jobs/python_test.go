package jobs_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

// A machine where the first python3 on PATH (pyenv, conda, a venv) lacks
// the tasks' libraries: WorkerOptions.Python runs the task with the
// interpreter it names, and without it the task gets PATH's python3.
// Not parallel: the worker looks commands up on the process's PATH.
func TestPythonInterpreter(t *testing.T) {
	real, err := jobs.ResolvePython("/usr/bin/python3")
	if err != nil {
		t.Fatalf("this test needs a real interpreter at /usr/bin/python3: %v", err)
	}
	fakeDir := t.TempDir()
	fake := "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'numpy'\" >&2\nexit 1\n"
	for _, name := range []string{"python3", "python"} {
		if err := os.WriteFile(filepath.Join(fakeDir, name), []byte(fake), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", fakeDir+string(os.PathListSeparator)+os.Getenv("PATH"))

	run := func(t *testing.T, python, argv0 string) (domain.FlowRun, string) {
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{Python: python})
		task := domain.TaskSpec{Name: "py", Command: []string{argv0, "-c", "import sys, json; print('interpreter', sys.executable)"}}
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "py", Tasks: []domain.TaskSpec{task}}, nil).ID)
		lines, err := jobs.ReadLogs(t.Context(), b.pool, fr.ID, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range lines {
			out = append(out, l.Message)
		}
		return fr, strings.Join(out, "\n")
	}

	for _, argv0 := range []string{"python3", "python"} {
		t.Run("set/"+argv0, func(t *testing.T) {
			fr, logs := run(t, real, argv0)
			if fr.State.Type != domain.Completed || !strings.Contains(logs, "interpreter "+real) {
				t.Fatalf("with Python %s, a %s task ended %s (%s); logs:\n%s", real, argv0, fr.State.Type, fr.State.Message, logs)
			}
		})
	}
	t.Run("unset", func(t *testing.T) {
		fr, logs := run(t, "", "python3")
		if fr.State.Type != domain.Failed || !strings.Contains(logs, "No module named") {
			t.Fatalf("without Python the task should run PATH's python3 (the fake that fails); it ended %s; logs:\n%s", fr.State.Type, logs)
		}
	})
	t.Run("other commands", func(t *testing.T) {
		// only python3 and python are replaced: python3.11 or a path is the task's choice
		fr, logs := run(t, real, filepath.Join(fakeDir, "python3"))
		if fr.State.Type != domain.Failed || !strings.Contains(logs, "No module named") {
			t.Fatalf("a task naming an interpreter by path ran another one: %s; logs:\n%s", fr.State.Type, logs)
		}
	})
}

func TestResolvePython(t *testing.T) {
	if p, err := jobs.ResolvePython(""); p != "" || err != nil {
		t.Errorf(`ResolvePython("") = %q, %v; want "", nil (PATH decides)`, p, err)
	}
	_, err := jobs.ResolvePython("/nonexistent/python3")
	if err == nil || !strings.Contains(err.Error(), `"/nonexistent/python3"`) {
		t.Errorf("a missing interpreter: %v; want an error naming it", err)
	}
	notExec := filepath.Join(t.TempDir(), "python3")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.ResolvePython(notExec); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("a file that is not executable: %v; want permission denied", err)
	}
}
