package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ordoflow/ordo/client"
	"github.com/ordoflow/ordo/domain"
)

// `ordo deploy FILE.py:FLOW` with the real binary and the Python package
// it carries.

// pyFlow is a flow of standard-library tasks: a sub-flow, a parameter, an
// edge with data and retries.
const pyFlow = `from ordo import flow, task


@task(retries=2, retry_delay_seconds=1)
def numbers(n):
    return list(range(n))


@task(name="sum")
def total(xs):
    return {"total": sum(xs)}


@flow(name="child")
def child(k: int = 1):
    numbers(k)


@flow
def pipeline(n: int = 4):
    """Sums the first n numbers."""
    total(numbers(n))
    child(k=2)
`

// deployFlowFile writes a flow file named name in a new directory and
// returns the directory.
func deployFlowFile(t *testing.T, name, src string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// ordoInDir runs the binary in dir with env added to the test's
// environment.
func ordoInDir(t *testing.T, dir string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ordoBinary(t), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("ordo %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// lineOf is the 1-based line of src that holds s.
func lineOf(t *testing.T, src, s string) int {
	t.Helper()
	i := strings.Index(src, s)
	if i < 0 {
		t.Fatalf("%q is not in the flow", s)
	}
	return strings.Count(src[:i], "\n") + 1
}

func TestDeployPythonFlowDryRun(t *testing.T) {
	t.Parallel()
	dir := deployFlowFile(t, "flow.py", pyFlow)
	// no server: --api-url names a port nothing listens on
	out, errOut, code := ordoInDir(t, dir, []string{"ORDO_API_URL=http://" + freeAddr(t)},
		"deploy", "flow.py:pipeline", "--name", "nightly", "--work-queue", "py", "--tag", "e2e", "--interval", "300", "--dry-run")
	if code != 0 {
		t.Fatalf("exit %d:\n%s%s", code, out, errOut)
	}
	specs := dryRunSpecs(t, out)
	child, top := specs[0], specs[1]
	if child.Name != "nightly.child" || top.Name != "nightly" || top.Description != "Sums the first n numbers." {
		t.Errorf("deployments %q, %q (%q); want nightly.child, then nightly with the docstring", child.Name, top.Name, top.Description)
	}
	for _, s := range specs {
		if s.WorkQueue != "py" || strings.Join(s.Tags, ",") != "e2e" {
			t.Errorf("%s: work queue %q, tags %v; want py and [e2e]", s.Name, s.WorkQueue, s.Tags)
		}
	}
	if child.Schedule != nil || top.Schedule == nil || top.Schedule.IntervalSeconds != 300 {
		t.Errorf("schedules: %+v, %+v; want every 300 s on nightly only", child.Schedule, top.Schedule)
	}
	if fmt.Sprint(top.Parameters) != "map[n:4]" {
		t.Errorf("parameters %v, want n=4", top.Parameters)
	}
	tasks := map[string]domain.TaskSpec{}
	for _, task := range top.Flow.Tasks {
		tasks[task.Name] = task
	}
	numbers, sum, sub := tasks["numbers"], tasks["sum"], tasks["child"]
	if len(top.Flow.Tasks) != 3 || numbers.Retries != 2 || sum.Retries != 0 || strings.Join(sum.DependsOn, ",") != "numbers" {
		t.Errorf("tasks, retries and edges lost: %+v", top.Flow.Tasks)
	}
	wantCmd := `python3 -m ordo run flow.py total --args {"xs":{"task":"numbers"}}`
	if strings.Join(sum.Command, " ") != wantCmd {
		t.Errorf("task sum runs %q, want %q", sum.Command, wantCmd)
	}
	if sub.Deployment != "nightly.child" || fmt.Sprint(sub.Parameters) != "map[k:2]" {
		t.Errorf("the sub-flow task: %+v", sub)
	}

	// PATH's python3 cannot import the flow (here: a stand-in that lacks
	// every module): Debian's traces it, and the command says so.
	_, path := fakePython(t)
	out, errOut, code = ordoInDir(t, dir, []string{"PATH=" + path}, "deploy", "flow.py:pipeline", "--dry-run")
	if code != 0 || !strings.Contains(out, "name: pipeline.child") || !strings.Contains(errOut, "traced the flow with "+fallbackPython) {
		t.Errorf("with a python3 on PATH that lacks modules: exit %d\n%s%s", code, out, errOut)
	}
}

func TestDeployPythonTraceErrorNamesTheLine(t *testing.T) {
	t.Parallel()
	src := strings.Replace(pyFlow, "    total(numbers(n))\n", "    xs = numbers(n)\n    if xs:\n        total(xs)\n", 1)
	dir := deployFlowFile(t, "flow.py", src)
	out, errOut, code := ordoInDir(t, dir, nil, "deploy", "flow.py:pipeline", "--dry-run")
	where := fmt.Sprintf("flow.py:%d", lineOf(t, src, "if xs:"))
	if code != 2 || out != "" || !strings.Contains(errOut, where) || !strings.Contains(errOut, "ordo: flow.py:pipeline not deployed") {
		t.Errorf("exit %d, want 2 and an error at %s; stdout %q, stderr:\n%s", code, where, out, errOut)
	}
}

func TestDeployPythonFlowRunsOnAWorker(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	// an absolute path: the worker runs the tasks from its own directory
	dir := deployFlowFile(t, "flow.py", pyFlow)
	file := filepath.Join(dir, "flow.py")
	out := c.ordo("deploy", file+":pipeline", "--work-queue", "pydeploy")
	if !strings.Contains(out, "deployment pipeline.child version 1") || !strings.Contains(out, "deployment pipeline version 1") ||
		strings.Index(out, "pipeline.child") > strings.Index(out, "deployment pipeline version") {
		t.Fatalf("deploy said:\n%s", out)
	}
	c.start("worker", "-q", "pydeploy")
	out, code := c.ordoCode("run", "pipeline", "--param", "n=5", "--watch")
	if code != 0 || !strings.Contains(out, "ended COMPLETED") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	var run client.FlowRun
	getJSON(t, c, "/runs/"+runIDFrom(t, out), &run)
	results := map[string]string{}
	for _, tr := range run.TaskRuns {
		results[tr.TaskName] = string(tr.Result)
	}
	if results["sum"] != `{"total":10}` || results["numbers"] != `[0,1,2,3,4]` {
		t.Errorf("task results %v, want numbers [0,1,2,3,4] and sum {\"total\":10}", results)
	}

	// The server refuses what the SDK lets through (a NUL in a default),
	// and the refusal names the flow's def line.
	bad := strings.Replace(pyFlow, "def pipeline(n: int = 4):", "def pipeline(n: int = 4, label: str = \"a\\x00b\"):", 1)
	badDir := deployFlowFile(t, "bad.py", bad)
	_, errOut, code := ordoInDir(t, badDir, c.env(), "deploy", "bad.py:pipeline", "--name", "bad")
	want := fmt.Sprintf("\nbad.py:%d: parameters", lineOf(t, bad, "def pipeline("))
	if code != 2 || !strings.Contains(errOut, "ordo: deployment bad: refused by the server") || !strings.Contains(errOut, want) ||
		!strings.Contains(errOut, "must not contain NUL characters") {
		t.Errorf("exit %d, want 2 and %q:\n%s", code, want, errOut)
	}
}
