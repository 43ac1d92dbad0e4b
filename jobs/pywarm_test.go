package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

// testPython is the interpreter the warm interpreter's tests run: Debian's,
// else PATH's python3.
func testPython(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if path, err := jobs.ResolvePython(p); err == nil {
			return path
		}
	}
	t.Skip("no python3")
	return ""
}

// pyFlow writes a flow file and returns its path.
func pyFlow(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flow.py")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// pyTask runs the task function fn of the flow file as the SDK's
// deployments do.
func pyTask(name, file, fn string, deps ...string) domain.TaskSpec {
	return domain.TaskSpec{Name: name, Command: []string{"python3", "-m", "ordo", "run", file, fn}, DependsOn: deps}
}

// pyWorker starts a worker whose Python is testPython, on a database of
// its own.
func pyWorker(t *testing.T, opts jobs.WorkerOptions) testBundle {
	t.Helper()
	b := setup(t)
	opts.Python = testPython(t)
	b.startWorker(t, opts)
	return b
}

// runLogs is a flow run's log, one line a message.
func runLogs(t *testing.T, b testBundle, fr domain.FlowRun) string {
	t.Helper()
	lines, err := jobs.ReadLogs(t.Context(), b.pool, fr.ID, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range lines {
		out = append(out, l.Stream+": "+l.Message)
	}
	return strings.Join(out, "\n")
}

// pyRun runs a one-task flow of fn and returns the run, ended.
func pyRun(t *testing.T, b testBundle, file, fn string) domain.FlowRun {
	t.Helper()
	return b.wait(t, b.create(t, domain.FlowSpec{Name: "py", Tasks: []domain.TaskSpec{pyTask(fn, file, fn)}}, nil).ID)
}

// taskResult decodes the result of the flow run's task.
func taskResult[T any](t *testing.T, b testBundle, fr domain.FlowRun, task string) T {
	t.Helper()
	var v T
	h := b.taskEvents(t, fr, task)
	if err := json.Unmarshal(h.run.Result, &v); err != nil {
		t.Fatalf("result of %s %s: %v", task, h.run.Result, err)
	}
	return v
}

const envFlow = `
import os, sys

imports = [0]
imports[0] += 1

def report():
    print("to stdout", os.environ["ORDO_TASK_NAME"])
    print("to stderr", file=sys.stderr)
    return {
        "ppid": os.getppid(),
        "imports": imports[0],
        "ordo": sorted(k for k in os.environ if k.startswith("ORDO_")),
        "secret": os.environ.get("WORKER_SECRET"),
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "cwd": os.getcwd(),
        "stdin": sys.stdin.read(),
    }
`

type envReport struct {
	Ppid       int      `json:"ppid"`
	Imports    int      `json:"imports"`
	Ordo       []string `json:"ordo"`
	Secret     *string  `json:"secret"`
	PythonPath string   `json:"pythonpath"`
	Cwd        string   `json:"cwd"`
	Stdin      string   `json:"stdin"`
}

func TestWarmPython(t *testing.T) {
	t.Parallel()
	workerEnv := append(os.Environ(), "WORKER_SECRET=hunter2")
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("ResultLogsAndEnvironment", func(t *testing.T) {
		t.Parallel()
		b := pyWorker(t, jobs.WorkerOptions{Env: workerEnv})
		file := pyFlow(t, envFlow)
		var zygote int
		for i := range 2 {
			fr := pyRun(t, b, file, "report")
			if fr.State.Type != domain.Completed {
				t.Fatalf("run %d ended %s (%s); logs:\n%s", i, fr.State.Type, fr.State.Message, runLogs(t, b, fr))
			}
			r := taskResult[envReport](t, b, fr, "report")
			if r.Ppid == os.Getpid() {
				t.Fatalf("run %d: the task is the worker's own child, not a warm interpreter's", i)
			}
			if i == 1 && r.Ppid != zygote {
				t.Errorf("the second attempt was forked by interpreter %d, the first by %d: want the same one reused", r.Ppid, zygote)
			}
			zygote = r.Ppid
			if r.Imports != 1 {
				t.Errorf("the module ran %d times in the task's process", r.Imports)
			}
			want := []string{"ORDO_ATTEMPT", "ORDO_INPUTS", "ORDO_INPUT_DIR", "ORDO_METRICS_PATH", "ORDO_OUTPUT_DIR",
				"ORDO_PARAMETERS", "ORDO_RESULT_PATH", "ORDO_RUN_ID", "ORDO_TASK_NAME", "ORDO_TASK_RUN_ID", "ORDO_WORKSPACE"}
			if strings.Join(r.Ordo, ",") != strings.Join(want, ",") {
				t.Errorf("ORDO_* variables: %v, want %v", r.Ordo, want)
			}
			if r.Secret != nil {
				t.Errorf("the worker's WORKER_SECRET leaked into the task: %q", *r.Secret)
			}
			if !strings.Contains(r.PythonPath, filepath.Join(b.workspace, ".python-sdk")) {
				t.Errorf("PYTHONPATH %q does not end with the worker's extracted package", r.PythonPath)
			}
			if r.Cwd != cwd || r.Stdin != "" {
				t.Errorf("the task ran in %q with stdin %q; want the worker's directory %q and an empty stdin", r.Cwd, r.Stdin, cwd)
			}
			logs := runLogs(t, b, fr)
			for _, l := range []string{"stdout: to stdout report", "stderr: to stderr"} {
				if !strings.Contains(logs, l) {
					t.Errorf("run %d: the log lacks %q:\n%s", i, l, logs)
				}
			}
		}
	})

	t.Run("ParallelAttemptsShareOneInterpreter", func(t *testing.T) {
		t.Parallel()
		b := pyWorker(t, jobs.WorkerOptions{Concurrency: 6})
		file := pyFlow(t, "import os, time\ndef parent():\n    time.sleep(0.2)\n    return [os.getpid(), os.getppid()]\n")
		var tasks []domain.TaskSpec
		for i := range 6 {
			tasks = append(tasks, pyTask(fmt.Sprintf("t%d", i), file, "parent"))
		}
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "py", Tasks: tasks}, nil).ID)
		if fr.State.Type != domain.Completed {
			t.Fatalf("the run ended %s (%s); logs:\n%s", fr.State.Type, fr.State.Message, runLogs(t, b, fr))
		}
		pids, parents := map[int]bool{}, map[int]bool{}
		for _, task := range tasks {
			r := taskResult[[2]int](t, b, fr, task.Name)
			pids[r[0]], parents[r[1]] = true, true
		}
		if len(pids) != len(tasks) || len(parents) != 1 || parents[os.Getpid()] {
			t.Errorf("%d tasks ran in %d processes forked by %v (the worker is %d); want one warm interpreter for all", len(tasks), len(pids), parents, os.Getpid())
		}
	})

	t.Run("SparesKilledAreReplaced", func(t *testing.T) {
		t.Parallel()
		b := pyWorker(t, jobs.WorkerOptions{})
		file := pyFlow(t, "import os\ndef parent():\n    return os.getppid()\n")
		zygote := taskResult[int](t, b, pyRun(t, b, file, "parent"), "parent")
		// the children waiting for the next requests
		children := fmt.Sprintf("/proc/%d/task/%d/children", zygote, zygote)
		if _, err := os.Stat(children); err != nil {
			t.Skipf("cannot list the interpreter's children: %v", err)
		}
		var spares []string
		waitUntil(t, time.Minute, "children waiting for requests", func() bool {
			raw, _ := os.ReadFile(children)
			spares = strings.Fields(string(raw))
			return len(spares) > 0
		})
		for _, f := range spares {
			pid, _ := strconv.Atoi(f)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		fr := pyRun(t, b, file, "parent")
		if fr.State.Type != domain.Completed || taskResult[int](t, b, fr, "parent") != zygote {
			t.Errorf("after its waiting children were killed the run ended %s, forked by %d; want completed by the same interpreter %d", fr.State.Type, taskResult[int](t, b, fr, "parent"), zygote)
		}
	})

	t.Run("Off", func(t *testing.T) {
		t.Parallel()
		b := pyWorker(t, jobs.WorkerOptions{Env: workerEnv, DisableWarmPython: true})
		fr := pyRun(t, b, pyFlow(t, envFlow), "report")
		if fr.State.Type != domain.Completed {
			t.Fatalf("the run ended %s (%s); logs:\n%s", fr.State.Type, fr.State.Message, runLogs(t, b, fr))
		}
		r := taskResult[envReport](t, b, fr, "report")
		if r.Ppid != os.Getpid() {
			t.Errorf("with the warm interpreter off the task's parent is %d, want the worker (%d)", r.Ppid, os.Getpid())
		}
		if r.Secret != nil || !strings.Contains(r.PythonPath, ".python-sdk") {
			t.Errorf("a cold Python task's environment: secret %v, PYTHONPATH %q", r.Secret, r.PythonPath)
		}
	})

	t.Run("EditedFileRunsNewCode", func(t *testing.T) {
		t.Parallel()
		b := pyWorker(t, jobs.WorkerOptions{})
		file := pyFlow(t, "import os\ndef version():\n    return {'v': 1, 'ppid': os.getppid()}\n")
		fr := pyRun(t, b, file, "version")
		first := taskResult[map[string]int](t, b, fr, "version")
		if first["v"] != 1 {
			t.Fatalf("first run: %v", first)
		}
		if err := os.WriteFile(file, []byte("import os\ndef version():\n    return {'v': 2, 'ppid': os.getppid()}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		fr = pyRun(t, b, file, "version")
		second := taskResult[map[string]int](t, b, fr, "version")
		if second["v"] != 2 {
			t.Errorf("after the file was edited the task returned %v (the first %v), want version 2", second, first)
		}
		if second["ppid"] == first["ppid"] || second["ppid"] == os.Getpid() {
			t.Errorf("the edited file ran under interpreter %d (first %d, worker %d): want a fresh warm one", second["ppid"], first["ppid"], os.Getpid())
		}
	})

	t.Run("ImportErrorRunsCold", func(t *testing.T) {
		t.Parallel()
		b := pyWorker(t, jobs.WorkerOptions{})
		file := pyFlow(t, "raise RuntimeError('broken at import')\ndef task():\n    return 1\n")
		fr := pyRun(t, b, file, "task")
		logs := runLogs(t, b, fr)
		if fr.State.Type != domain.Failed || !strings.Contains(logs, "RuntimeError: broken at import") {
			t.Fatalf("the run ended %s (%s); want FAILED with the import error in the log:\n%s", fr.State.Type, fr.State.Message, logs)
		}
		if !strings.Contains(fr.State.Message, "broken at import") && !strings.Contains(b.taskEvents(t, fr, "task").run.State.Message, "broken at import") {
			t.Errorf("the failure message does not name the error: %q", b.taskEvents(t, fr, "task").run.State.Message)
		}
		// fixed: the next attempt gets a warm interpreter
		if err := os.WriteFile(file, []byte("import os\ndef task():\n    return os.getppid()\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		fr = pyRun(t, b, file, "task")
		if ppid := taskResult[int](t, b, fr, "task"); fr.State.Type != domain.Completed || ppid == os.Getpid() {
			t.Errorf("once fixed the run ended %s with parent %d (worker %d); want it forked warm", fr.State.Type, ppid, os.Getpid())
		}
	})

	t.Run("TimeoutKillsGroup", func(t *testing.T) {
		t.Parallel()
		b := pyWorker(t, jobs.WorkerOptions{KillGrace: 200 * time.Millisecond})
		pidFile := filepath.Join(t.TempDir(), "sleep.pid")
		file := pyFlow(t, `
import subprocess, time
def first():
    pass
def slow():
    p = subprocess.Popen(["sleep", "600"])
    with open(`+strconv.Quote(pidFile)+`, "w") as f:
        f.write(str(p.pid))
    time.sleep(600)
`)
		// the interpreter starts for the first task, so that the second's
		// second is its own
		task := pyTask("slow", file, "slow", "first")
		task.TimeoutSeconds = 1
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "py", Tasks: []domain.TaskSpec{pyTask("first", file, "first"), task}}, nil).ID)
		h := b.taskEvents(t, fr, "slow")
		if h.run.State.Type != domain.Failed || h.run.State.Name != domain.NameTimedOut {
			t.Fatalf("the task ended %s/%s (%s), want FAILED/TimedOut", h.run.State.Type, h.run.State.Name, h.run.State.Message)
		}
		if _, err := os.Stat(pidFile); err != nil {
			t.Fatalf("the task timed out before it started its subprocess: %v", err)
		}
		waitGone(t, readPid(t, pidFile), 30*time.Second, "the timed-out task's subprocess")
	})

	t.Run("Cancel", func(t *testing.T) {
		t.Parallel()
		b := pyWorker(t, jobs.WorkerOptions{})
		pidFile := filepath.Join(t.TempDir(), "task.pid")
		file := pyFlow(t, `
import os, time
def block():
    with open(`+strconv.Quote(pidFile)+`, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)
`)
		fr := b.create(t, domain.FlowSpec{Name: "py", Tasks: []domain.TaskSpec{pyTask("block", file, "block")}}, nil)
		pid := readPid(t, pidFile)
		if _, err := b.svc.RunCancel(t.Context(), fr.ID, "token:alice"); err != nil {
			t.Fatal(err)
		}
		fr = b.wait(t, fr.ID)
		if fr.State.Type != domain.Cancelled {
			t.Fatalf("the run ended %s (%s), want CANCELLED", fr.State.Type, fr.State.Message)
		}
		waitGone(t, pid, 30*time.Second, "the cancelled task")
	})

	t.Run("InterpreterKilledMidAttemptIsRetried", func(t *testing.T) {
		t.Parallel()
		b := pyWorker(t, jobs.WorkerOptions{})
		dir := t.TempDir()
		file := pyFlow(t, `
import os, time
def long():
    if os.environ["ORDO_ATTEMPT"] == "1":
        with open(`+strconv.Quote(filepath.Join(dir, "pids"))+`, "w") as f:
            f.write("%d %d" % (os.getpid(), os.getppid()))
        time.sleep(600)
    return {"attempt": int(os.environ["ORDO_ATTEMPT"]), "ppid": os.getppid()}
`)
		fr := b.create(t, domain.FlowSpec{Name: "py", Tasks: []domain.TaskSpec{pyTask("long", file, "long")}}, nil)
		var child, zygote int
		waitUntil(t, time.Minute, "the first attempt's pids", func() bool {
			raw, _ := os.ReadFile(filepath.Join(dir, "pids"))
			n, _ := fmt.Sscan(string(raw), &child, &zygote)
			return n == 2
		})
		if err := syscall.Kill(zygote, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		fr = b.wait(t, fr.ID)
		if fr.State.Type != domain.Completed {
			t.Fatalf("the run ended %s (%s); logs:\n%s", fr.State.Type, fr.State.Message, runLogs(t, b, fr))
		}
		r := taskResult[map[string]int](t, b, fr, "long")
		if r["attempt"] != 2 || r["ppid"] == zygote || r["ppid"] == os.Getpid() {
			t.Errorf("the task completed with %v; want attempt 2 forked by a new warm interpreter (the killed one was %d)", r, zygote)
		}
		h := b.taskEvents(t, fr, "long")
		if rs := h.of("TaskRunRetryScheduled"); len(rs) != 1 || h.run.Interruptions != 1 {
			t.Errorf("want one retry that was a hand-back (the task has no retries), got %d retries, %d interruptions", len(rs), h.run.Interruptions)
		}
		if logs := runLogs(t, b, fr); !strings.Contains(logs, "warm Python interpreter died") {
			t.Errorf("the log does not say the warm interpreter died:\n%s", logs)
		}
		waitGone(t, child, 30*time.Second, "the first attempt's process")
	})
}

// The warm interpreters go with their worker.
func TestWarmPythonStopsWithWorker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w, err := jobs.NewWorker(b.pool, b.store, jobs.WorkerOptions{
		Queues: []string{domain.DefaultWorkQueue}, WorkspaceDir: b.workspace, Python: testPython(t), Logger: quietLogger,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	fr := pyRun(t, b, pyFlow(t, "import os\ndef parent():\n    return os.getppid()\n"), "parent")
	zygote := taskResult[int](t, b, fr, "parent")
	if zygote == os.Getpid() || !alive(zygote) {
		t.Fatalf("the task's parent %d is not a live warm interpreter", zygote)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitGone(t, zygote, 30*time.Second, "the warm interpreter of a stopped worker")
}
