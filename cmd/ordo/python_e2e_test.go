package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ordoflow/ordo/client"
)

// Python flows end to end: the real binary deploys flow files with `ordo
// deploy FILE.py:FLOW`, and workers run their tasks with Debian's python3
// (which has the example's libraries) and the warm interpreter on.

// mlPython skips the test when /usr/bin/python3 lacks the example's
// libraries (scripts/install-deps ml installs them; CI has them).
func mlPython(t *testing.T) string {
	t.Helper()
	if out, err := mlLibraries(); err != nil {
		t.Skipf("%s lacks scikit-learn, pandas or psycopg2 (scripts/install-deps ml): %v\n%s", fallbackPython, err, out)
	}
	return fallbackPython
}

// pyDeploy deploys FILE:FLOW from the repository's root as a user would.
func (c *cluster) pyDeploy(python, target, name string, env ...string) {
	c.t.Helper()
	out, code := c.ordoAt("../..", env, "deploy", target, "--name", name, "--work-queue", "ml", "--python", python)
	if code != 0 || !strings.Contains(out, name) {
		c.t.Fatalf("ordo deploy %s: exit %d\n%s", target, code, out)
	}
}

// watchRun starts a run of the deployment, follows it to its end and
// returns the run; want is the exit status `ordo run --watch` must have.
func (c *cluster) watchRun(deployment string, want int) client.FlowRun {
	c.t.Helper()
	out, code := c.ordoCode("run", deployment, "--watch")
	if code != want {
		c.t.Fatalf("ordo run %s --watch: exit %d, want %d\n%s", deployment, code, want, out)
	}
	var run client.FlowRun
	getJSON(c.t, c, "/runs/"+runIDIn(c.t, out), &run)
	return run
}

func taskRunNamed(t *testing.T, run client.FlowRun, name string) client.TaskRun {
	t.Helper()
	for _, tr := range run.TaskRuns {
		if tr.TaskName == name {
			return tr
		}
	}
	t.Fatalf("run %s has no task %s", run.ID, name)
	return client.TaskRun{}
}

// ranOn maps each task of the run to the worker that last started it.
func ranOn(t *testing.T, c *cluster, runID string) map[string]string {
	t.Helper()
	var trail struct {
		Items []client.Event `json:"items"`
	}
	getJSON(t, c, "/runs/"+runID+"/events", &trail)
	on := map[string]string{}
	for _, e := range trail.Items {
		if e.Type == "TaskRunStarted" {
			var d struct {
				Worker string `json:"worker"`
			}
			_ = json.Unmarshal(e.Data, &d)
			on[e.TaskName] = d.Worker
		}
	}
	return on
}

// gpuFlow reuses the example's tasks, with train routed to queue gpu.
const gpuFlow = `import sys
sys.path.insert(0, %q)

from flow import evaluate, load_data, preprocess, split, train
from ordo import flow

train_on_gpu = train.with_options(work_queue="gpu")


@flow(name="ml-pipeline-gpu")
def gpu_pipeline(table: str = "houses"):
    raw = load_data(table)
    train_set, test_set = split(preprocess(raw), 0.2)
    model = train_on_gpu(train_set, 100, 0.1, 3)
    return evaluate(model, test_set)
`

// smallFlows are flows of the standard library only: a cached task, a task
// that raises, and a task the warm interpreter's tests kill and edit.
const smallFlows = `import os
import time

from ordo import flow, task
from ordo.tasks import task_input_hash

VERSION = 1


@task(cache_key_fn=task_input_hash)
def double(n: int) -> int:
    print("computing", n)
    return 2 * n


@flow
def cached(n: int = 21):
    double(n)


def check(x):
    if x > 0:
        raise ValueError("x must not be positive, got %%d" %% x)


@task
def refuse(x: int):
    print("checking", x)
    check(x)


@flow
def failing(x: int = 7):
    refuse(x)


@task
def slow() -> dict:
    # the first attempt says it runs, then waits to be killed
    if not os.path.exists(%q):
        open(%q, "w").close()
        time.sleep(60)
    return {"version": VERSION, "attempt": int(os.environ["ORDO_ATTEMPT"])}


@flow
def warm(n: int = 0):
    slow()


@flow
def parent(n: int = 5):
    # a sub-flow: a run of the deployment ordo deploy made for it
    cached(n=4)
    double(n)
`

func TestEndToEndPythonFlows(t *testing.T) {
	t.Parallel()
	python := mlPython(t)
	c := startCluster(t)
	example, err := filepath.Abs("../../examples/ml-pipeline-py")
	if err != nil {
		t.Fatal(err)
	}

	proxied, proxy := seedBehindProxy(t, c)

	// two hosts, each with a workspace of its own: files reach the other
	// only through the blob store
	for _, w := range []struct{ name, queue string }{{"cpu-host", "ml"}, {"gpu-host", "gpu"}} {
		worker := exec.Command(c.bin, "worker", "-q", w.queue, "--name", w.name, "--python", python,
			"--workspace-dir", filepath.Join(c.dir, "ws-"+w.name))
		worker.Dir = "../.." // the commands name the flow file from the repository's root
		// load_data inherits ML_DATABASE_URL from its worker
		worker.Env = append(c.env(), "ML_DATABASE_URL="+proxied)
		startProcess(t, worker, filepath.Join(c.dir, w.name+".log"))
	}

	dir := t.TempDir()
	marker := filepath.Join(dir, "slow-started")
	small := filepath.Join(dir, "small.py")
	writeFlow(t, small, fmt.Sprintf(smallFlows, marker, marker))
	writeFlow(t, filepath.Join(dir, "gpu.py"), fmt.Sprintf(gpuFlow, example))

	// the one command of the quickstart
	c.pyDeploy(python, "examples/ml-pipeline-py/flow.py:ml_pipeline", "house_prices")
	c.pyDeploy(python, filepath.Join(dir, "gpu.py")+":gpu_pipeline", "house_prices_gpu")
	for _, f := range []string{"cached", "failing", "warm", "parent"} {
		c.pyDeploy(python, small+":"+f, "py_"+f)
	}

	t.Run("PipelineRetriesAndScores", func(t *testing.T) {
		run := c.watchRun("house_prices", 0)
		if run.Metrics["r2"] < 0.8 || run.Metrics["rmse"] <= 0 || run.Metrics["mae"] <= 0 {
			t.Errorf("run metrics %v: want r2 ≥ 0.8, rmse and mae > 0", run.Metrics)
		}
		ev := taskRunNamed(t, run, "evaluate")
		if len(ev.Outputs) == 0 || !hasOutput(ev.Outputs, "report.md") {
			t.Errorf("evaluate's outputs %+v lack report.md", ev.Outputs)
		}
		retries := checkRetriedAfterRefusal(t, c, run.ID, "ConnectionError: cannot reach the data database", proxy)
		t.Logf("R² %.4f, RMSE %.0f; load_data retried %d time(s)", run.Metrics["r2"], run.Metrics["rmse"], retries)
	})

	t.Run("TrainOnAnotherHost", func(t *testing.T) {
		run := c.watchRun("house_prices_gpu", 0)
		on := ranOn(t, c, run.ID)
		if !strings.HasPrefix(on["train"], "gpu-host") || !strings.HasPrefix(on["evaluate"], "cpu-host") || !strings.HasPrefix(on["split"], "cpu-host") {
			t.Errorf("tasks ran on %v; want train on the gpu host, the others on the cpu host", on)
		}
		if run.Metrics["r2"] < 0.8 {
			t.Errorf("run metrics %v: want r2 ≥ 0.8", run.Metrics)
		}
		// the model and the data frames never went through a workspace
		if m, _ := filepath.Glob(filepath.Join(c.dir, "ws-*", "*", "*.pkl")); len(m) != 0 {
			t.Errorf("pickles in a workspace: %v", m)
		}
	})

	t.Run("CachedOnTheSecondRun", func(t *testing.T) {
		first := taskRunNamed(t, c.watchRun("py_cached", 0), "double")
		run := c.watchRun("py_cached", 0)
		second := taskRunNamed(t, run, "double")
		if first.State.Name == "Cached" || second.State.Name != "Cached" {
			t.Errorf("double: %s then %s; want it run, then Cached", first.State.Name, second.State.Name)
		}
		if show := c.ordo("runs", "show", run.ID); !strings.Contains(show, "Cached") {
			t.Errorf("runs show does not show double Cached:\n%s", show)
		}
		if string(second.Result) != "42" || string(first.Result) != "42" {
			t.Errorf("double's results %s and %s, want 42", first.Result, second.Result)
		}
	})

	t.Run("SubFlow", func(t *testing.T) {
		run := c.watchRun("py_parent", 0)
		sub := taskRunNamed(t, run, "cached")
		if sub.State.Type != "COMPLETED" || string(taskRunNamed(t, run, "double").Result) != "10" {
			t.Errorf("sub-flow task %s, double %s; want COMPLETED and 10", sub.State.Type, taskRunNamed(t, run, "double").Result)
		}
		var children struct {
			Items []client.FlowRun `json:"items"`
		}
		getJSON(t, c, "/runs?deployment=py_parent.cached", &children)
		if len(children.Items) != 1 || children.Items[0].State.Type != "COMPLETED" || fmt.Sprint(children.Items[0].Parameters["n"]) != "4" {
			t.Errorf("the sub-flow's runs: %+v; want one COMPLETED with n=4", children.Items)
		}
	})

	t.Run("RaisesWithItsTraceback", func(t *testing.T) {
		run := c.watchRun("py_failing", 1)
		tr := taskRunNamed(t, run, "refuse")
		const last = "ValueError: x must not be positive, got 7"
		if tr.Error == nil || !strings.HasSuffix(*tr.Error, last) {
			t.Errorf("the failure's message is %v, want it to end with %q", deref(tr.Error), last)
		}
		logs := c.ordo("runs", "logs", run.ID)
		for _, want := range []string{"checking 7", "Traceback (most recent call last)", "small.py\", line", "in check", last} {
			if !strings.Contains(logs, want) {
				t.Errorf("the task's log lacks %q:\n%s", want, logs)
			}
		}
	})

	t.Run("WarmInterpreterKilledAndEdited", func(t *testing.T) {
		out := c.ordo("run", "py_warm")
		runID := runIDIn(t, out)
		// SIGKILL the warm interpreter while the attempt runs: the attempt
		// is handed back and runs again
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(marker); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the task never started")
			}
		}
		zygote := warmPID(t, small)
		if err := syscall.Kill(zygote, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		run := waitRun(t, c, runID)
		if run.State.Type != "COMPLETED" {
			t.Fatalf("the run whose warm interpreter was killed ended %s: %s", run.State.Type, run.State.Message)
		}
		if got := string(taskRunNamed(t, run, "slow").Result); got != `{"attempt":2,"version":1}` {
			t.Errorf("slow's result %s, want the second attempt's", got)
		}
		next := warmPID(t, small)
		if next == zygote {
			t.Errorf("the warm interpreter %d was killed, and is still the one", zygote)
		}

		// editing the file: the next run runs the new code
		b, err := os.ReadFile(small)
		if err != nil {
			t.Fatal(err)
		}
		writeFlow(t, small, strings.Replace(string(b), "VERSION = 1", "VERSION = 22", 1))
		run = c.watchRun("py_warm", 0)
		if got := string(taskRunNamed(t, run, "slow").Result); got != `{"attempt":1,"version":22}` {
			t.Errorf("after the edit, slow returned %s; want version 22", got)
		}
	})
	c.validateLog()
}

func writeFlow(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// warmPID is the pid of the warm interpreter of the flow file, waiting
// for it to be there: the oldest process of that command line, since the
// children it forks for attempts keep it.
func warmPID(t *testing.T, file string) int {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		out, _ := exec.Command("pgrep", "-o", "-f", "ordo warm "+file).Output()
		var pid int
		if _, err := fmt.Sscan(string(out), &pid); err == nil {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no warm interpreter of %s (pgrep -f 'ordo warm %s')", file, file)
		}
	}
}

func waitRun(t *testing.T, c *cluster, runID string) client.FlowRun {
	t.Helper()
	var run client.FlowRun
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		getJSON(t, c, "/runs/"+runID, &run)
		if run.State.Type.Terminal() {
			return run
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s not ended: %s", runID, run.State.Type)
		}
	}
}

func hasOutput(outs []client.TaskOutput, name string) bool {
	for _, o := range outs {
		if o.Name == name {
			return true
		}
	}
	return false
}

func deref(s *string) string {
	if s == nil {
		return "null"
	}
	return *s
}
