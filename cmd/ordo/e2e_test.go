package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/client"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/apicontract"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// The end-to-end tests build the real ordo binary and drive it as a user
// would: separate server and worker processes, the CLI against the API.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func ordoBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildOrdo()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// buildOrdo builds the ordo binary once for the package's tests.
func buildOrdo() (string, error) {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ordo-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "ordo")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	return binPath, buildErr
}

// cluster is one database with a server and workers on it.
type cluster struct {
	t      *testing.T
	bin    string
	dbURL  string
	apiURL string
	dir    string
	extra  []string // more environment for every process, e.g. the blob store's
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startCluster migrates a fresh database and starts `ordo server` on it.
// The CLI and the test reach the server through a proxy that checks every
// request and answer against the API's OpenAPI document.
func startCluster(t *testing.T, serverArgs ...string) *cluster {
	t.Helper()
	return startClusterEnv(t, nil, serverArgs...)
}

// startClusterEnv is startCluster with more environment for the server,
// workers and commands.
func startClusterEnv(t *testing.T, env []string, serverArgs ...string) *cluster {
	t.Helper()
	return startClusterOn(t, pgtest.URL(t), env, serverArgs...)
}

// startClusterOn is startClusterEnv on the database at dbURL.
func startClusterOn(t *testing.T, dbURL string, env []string, serverArgs ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, bin: ordoBinary(t), dbURL: dbURL, dir: t.TempDir(), extra: env}
	c.ordo("migrate", "up")
	addr := freeAddr(t)
	server := "http://" + addr
	c.apiURL = server
	c.start(append([]string{"server", "--addr", addr}, serverArgs...)...)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(server + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				c.apiURL = apicontract.Proxy(t, server)
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready at %s: %v", server, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *cluster) env() []string {
	return append(append(os.Environ(), "ORDO_DATABASE_URL="+c.dbURL, "ORDO_API_URL="+c.apiURL, "ORDO_WORKSPACE_DIR="+filepath.Join(c.dir, "ws")), c.extra...)
}

// start runs a long-lived ordo process that is stopped with SIGTERM at the
// end of the test.
func (c *cluster) start(args ...string) *exec.Cmd {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Env = c.env()
	startProcess(c.t, cmd, filepath.Join(c.dir, fmt.Sprintf("%s-%d.log", args[0], time.Now().UnixNano())))
	return cmd
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// ordo runs a CLI command to its end and returns its output; it fails the
// test unless the command exits 0.
func (c *cluster) ordo(args ...string) string {
	c.t.Helper()
	out, code := c.ordoCode(args...)
	if code != 0 {
		c.t.Fatalf("ordo %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func (c *cluster) ordoCode(args ...string) (string, int) {
	c.t.Helper()
	return c.ordoAt("", nil, args...)
}

// ordoAt runs a CLI command from dir ("": the test's) with more
// environment, and returns its output and exit status.
func (c *cluster) ordoAt(dir string, env []string, args ...string) (string, int) {
	c.t.Helper()
	// A guard against a hang, not a judgment of speed: a --watch lasts as
	// long as its run, which a loaded machine may make long.
	guard := 2 * time.Minute
	if slices.Contains(args, "--watch") {
		guard = 15 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Dir = dir
	cmd.Env = append(c.env(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	}
	c.t.Fatalf("ordo %s: %v", strings.Join(args, " "), err)
	return "", -1
}

func (c *cluster) writeFile(name, content string) string {
	c.t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// validateLog replays the whole event log through the domain: every event
// must be a legal transition from the state before it.
func (c *cluster) validateLog() int {
	c.t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, c.dbURL)
	if err != nil {
		c.t.Fatal(err)
	}
	defer pool.Close()
	store := eventstore.New(pool, domain.NewRegistry())
	defer store.Close()
	v := domain.NewLogValidator(domain.NewRegistry())
	var cp eventstore.Checkpoint
	n := 0
	for {
		envs, err := store.ReadAll(ctx, pool, cp, 1000)
		if err != nil {
			c.t.Fatal(err)
		}
		if len(envs) == 0 {
			break
		}
		for _, e := range envs {
			if err := v.Check(e); err != nil {
				c.t.Fatalf("the event log has an illegal transition: %v", err)
			}
		}
		n += len(envs)
		cp = eventstore.CheckpointOf(envs[len(envs)-1])
	}
	if err := v.Finish(); err != nil {
		c.t.Fatalf("the event log has a gap: %v", err)
	}
	return n
}

const e2eDeployment = `
name: e2e-pipeline
description: three tasks, the last one fails when asked to
work_queue: e2e
tags: [e2e, nightly]
parameters: {fail: "no"}
flow:
  name: e2e
  tasks:
    - name: extract
      command: [sh, -c, 'echo extracting; echo "{\"rows\": 42}" > "$ORDO_RESULT_PATH"']
    - name: transform
      command: [sh, -c, 'echo "got $ORDO_INPUTS"; echo "{\"ok\": true}" > "$ORDO_RESULT_PATH"']
      depends_on: [extract]
    - name: report
      command: [sh, -c, 'case "$ORDO_PARAMETERS" in *yes*) echo failing >&2; exit 3;; esac; echo done']
      depends_on: [transform]
`

func TestEndToEndDeployRunWatch(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	c.start("worker", "-q", "e2e")

	out := c.ordo("deploy", "-f", c.writeFile("deployment.yaml", e2eDeployment))
	if !strings.Contains(out, "deployment e2e-pipeline version 1") {
		t.Fatalf("deploy said: %s", out)
	}

	t.Run("CompletedRunExitsZero", func(t *testing.T) {
		out, code := c.ordoCode("run", "e2e-pipeline", "--watch")
		if code != 0 || !strings.Contains(out, "ended COMPLETED") {
			t.Fatalf("exit %d, output:\n%s", code, out)
		}
		for _, task := range []string{"extract", "transform", "report"} {
			if !strings.Contains(out, task) {
				t.Errorf("watch output does not show task %s:\n%s", task, out)
			}
		}
	})

	t.Run("FailedRunExitsOne", func(t *testing.T) {
		out, code := c.ordoCode("run", "e2e-pipeline", "--param", "fail=yes", "--watch")
		if code != 1 || !strings.Contains(out, "ended FAILED") {
			t.Fatalf("exit %d, output:\n%s", code, out)
		}
		// The failure says why: what the task wrote last on stderr, in
		// --watch, in runs show and in the API's error.
		const why = "exited with code 3; stderr: failing"
		if !strings.Contains(out, why) {
			t.Errorf("--watch does not say %q:\n%s", why, out)
		}
		id := runIDFrom(t, out)
		if show := c.ordo("runs", "show", id); !strings.Contains(show, why) {
			t.Errorf("runs show does not say %q:\n%s", why, show)
		}
		var run client.FlowRun
		getJSON(t, c, "/runs/"+id, &run)
		for _, tr := range run.TaskRuns {
			if tr.TaskName != "report" {
				continue
			}
			if tr.Error == nil || *tr.Error != why {
				got := "null"
				if tr.Error != nil {
					got = *tr.Error
				}
				t.Errorf("the API's error of the failed task run is %q, want %q", got, why)
			}
		}
	})

	t.Run("RunsAreListedAndFiltered", func(t *testing.T) {
		out := c.ordo("runs", "ls", "--deployment", "e2e-pipeline")
		if strings.Count(out, "e2e-pipeline") != 2 {
			t.Fatalf("want two runs of the deployment:\n%s", out)
		}
		failed := c.ordo("runs", "ls", "--state", "failed")
		if strings.Count(failed, "FAILED") != 1 || strings.Contains(failed, "COMPLETED") {
			t.Fatalf("state filter:\n%s", failed)
		}
	})

	t.Run("BadDeploymentIsRefusedWithTheField", func(t *testing.T) {
		bad := strings.Replace(e2eDeployment, "depends_on: [transform]", "depends_on: [transfrom]", 1)
		out, code := c.ordoCode("deploy", "-f", c.writeFile("bad.yaml", bad))
		if code != 2 || !strings.Contains(out, "flow.tasks[2].depends_on[0]") || !strings.Contains(out, "transfrom") {
			t.Fatalf("exit %d, output:\n%s", code, out)
		}
	})

	if n := c.validateLog(); n == 0 {
		t.Fatal("no events in the log")
	}
}

func TestEndToEndRunName(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	c.ordo("deploy", "-f", c.writeFile("deployment.yaml", e2eDeployment))
	out := c.ordo("run", "e2e-pipeline", "--name", "nightly backfill 2026-11-28")
	if !strings.Contains(out, "run nightly backfill 2026-11-28 (") {
		t.Fatalf("the run does not carry its name:\n%s", out)
	}
	first := runIDIn(t, out)
	out, code := c.ordoCode("run", "e2e-pipeline", "--name", strings.Repeat("x", 201))
	if code != 2 || !strings.Contains(out, "name: at most 200 characters") {
		t.Fatalf("a 201-character name: exit %d\n%s", code, out)
	}

	// RUN is a run's id or its name; a name two runs carry is refused with
	// their ids, and a name no run carries is not found.
	show := c.ordo("runs", "show", "nightly backfill 2026-11-28")
	if !strings.Contains(show, "run nightly backfill 2026-11-28 ("+first+")") || !strings.Contains(show, "extract") {
		t.Fatalf("runs show by name, want run %s:\n%s", first, show)
	}
	if out := c.ordo("history", "nightly backfill 2026-11-28"); !strings.Contains(out, "FlowRunCreated") {
		t.Fatalf("history by name:\n%s", out)
	}
	second := runIDIn(t, c.ordo("run", "e2e-pipeline", "--name", "nightly backfill 2026-11-28"))
	out, code = c.ordoCode("runs", "logs", "nightly backfill 2026-11-28")
	if code == 0 || !strings.Contains(out, "2 runs are named") || !strings.Contains(out, first) || !strings.Contains(out, second) {
		t.Fatalf("a name two runs carry: exit %d, want both ids (%s, %s)\n%s", code, first, second, out)
	}
	out, code = c.ordoCode("runs", "cancel", "nightly")
	if code == 0 || !strings.Contains(out, `no run named "nightly"`) {
		t.Fatalf("a name no run carries (though two contain it): exit %d\n%s", code, out)
	}
}

// runIDIn returns the run id that `ordo run` printed: "run NAME (ID) ...".
func runIDIn(t *testing.T, out string) string {
	t.Helper()
	m := regexp.MustCompile(`\(([0-9a-f]{8}-[0-9a-f-]{27})\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no run id in:\n%s", out)
	}
	return m[1]
}

// TestEndToEndWorkerSIGTERMLosesNothing: a worker told to stop while a task
// runs lets it run for its grace period, then kills it and hands the attempt
// back; another worker runs it again, and the run completes although the
// task has no retries.
func TestEndToEndWorkerSIGTERMLosesNothing(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	c.ordo("deploy", "-f", c.writeFile("slow.yaml", `
name: slow
work_queue: sigterm
flow:
  name: slow
  tasks:
    - name: long
      command: [sh, -c, 'echo "attempt $ORDO_ATTEMPT"; sleep 4; echo "{\"attempt\": $ORDO_ATTEMPT}" > "$ORDO_RESULT_PATH"']
    - name: after
      command: [sh, -c, 'echo "got $ORDO_INPUTS"']
      depends_on: [long]
`))
	first := c.start("worker", "-q", "sigterm", "--shutdown-grace", "1s", "--name", "first")
	out := c.ordo("run", "slow")
	runID := runIDFrom(t, out)

	// wait until the long task runs on the first worker, then stop that worker
	deadline := time.Now().Add(20 * time.Second)
	for {
		var run client.FlowRun
		getJSON(t, c, "/runs/"+runID, &run)
		if len(run.TaskRuns) > 0 && run.TaskRuns[0].State.Type == "RUNNING" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the task never started: %+v", run.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := first.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = first.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Fatal("the worker did not stop within its grace period and a margin")
	}

	c.start("worker", "-q", "sigterm", "--name", "second")
	out, code := c.ordoCode("run", "slow", "--watch") // a second run, to be sure the second worker works
	if code != 0 {
		t.Fatalf("second run: exit %d\n%s", code, out)
	}
	var run client.FlowRun
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		getJSON(t, c, "/runs/"+runID, &run)
		if run.State.Type.Terminal() || time.Now().After(deadline) {
			break
		}
	}
	if run.State.Type != "COMPLETED" {
		t.Fatalf("the interrupted run ended %s: %s", run.State.Type, run.State.Message)
	}
	var trail struct {
		Items []client.Event `json:"items"`
	}
	getJSON(t, c, "/runs/"+runID+"/events", &trail)
	handedBack := 0
	for _, e := range trail.Items {
		if e.Type == "TaskRunRetryScheduled" && strings.Contains(string(e.Data), `"interrupted":true`) {
			handedBack++
		}
	}
	if handedBack != 1 || string(run.TaskRuns[0].Result) != `{"attempt":2}` {
		t.Fatalf("want the first attempt handed back once and the second to finish; handed back %d, result %s", handedBack, run.TaskRuns[0].Result)
	}
	c.validateLog()
}
