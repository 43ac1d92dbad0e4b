package main

import (
	"encoding/json"
	"math"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ordoflow/ordo/client"
)

// The Go worker example, as its README says to use it: the user's own
// worker binary with Go handler tasks, next to a real `ordo server`.
func TestEndToEndGoWorkerExample(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	bin := filepath.Join(c.dir, "go-worker")
	if out, err := exec.Command("go", "build", "-o", bin, "../../examples/go-worker").CombinedOutput(); err != nil {
		t.Fatalf("build the example: %v\n%s", err, out)
	}
	worker := exec.Command(bin, "-q", "go")
	worker.Env = c.env()
	startProcess(t, worker, filepath.Join(c.dir, "go-worker.log"))

	if out := c.ordo("deploy", "-f", "../../examples/go-worker/deployment.yaml"); !strings.Contains(out, "line_fit") {
		t.Fatalf("deploy: %s", out)
	}
	out, code := c.ordoCode("run", "line_fit", "-p", "points=2000", "-p", "slope=-1.5", "--watch")
	if code != 0 {
		t.Fatalf("the pipeline did not complete (exit %d):\n%s", code, out)
	}
	var run client.FlowRun
	getJSON(t, c, "/runs/"+runIDFrom(t, out), &run)
	var fit struct{ R2, RMSE, Slope, Intercept float64 }
	if err := json.Unmarshal(run.Result, &fit); err != nil {
		t.Fatalf("run result %s: %v", run.Result, err)
	}
	// unit noise around y = -1.5x + 2 over x in [0, 10)
	if fit.R2 < 0.8 || math.Abs(fit.Slope+1.5) > 0.1 || math.Abs(fit.Intercept-2) > 0.3 || math.Abs(fit.RMSE-1) > 0.2 {
		t.Fatalf("run result %s: want the line y = -1.5x + 2 back, with an RMSE near 1", run.Result)
	}

	// a parameter the deployment's schema refuses never reaches the worker
	if out, code := c.ordoCode("run", "line_fit", "-p", "points=1"); code == 0 || !strings.Contains(out, "points") {
		t.Fatalf("points=1 was accepted (exit %d):\n%s", code, out)
	}
	t.Logf("line_fit completed: %s", run.Result)
	c.validateLog()
}
