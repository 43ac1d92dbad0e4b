package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

func TestTimeoutKillsProcessGroup(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, jobs.WorkerOptions{})
	task := sh("slow", `sleep 30 & echo $! > "$ORDO_WORKSPACE/child.pid"; wait`)
	task.TimeoutSeconds = 0.5
	began := time.Now()
	fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "slow", Tasks: []domain.TaskSpec{task}}, nil).ID)
	// Without the timeout the run would last the 30 s of the sleep; the
	// bound is far from both, so that a loaded machine does not fail it.
	if took := time.Since(began); took > 20*time.Second {
		t.Errorf("the run took %v with a 0.5s timeout", took)
	}
	h := b.tasks(t, fr)["slow"]
	if fr.State.Type != domain.Failed || h.run.State.Name != domain.NameTimedOut || !h.run.LastFailure.TimedOut {
		t.Fatalf("run %s, task %s/%s; want FAILED and TimedOut", fr.State.Type, h.run.State.Type, h.run.State.Name)
	}
	raw, err := os.ReadFile(b.workspace + "/" + fr.ID.String() + "/child.pid")
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the task's child process %d outlived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.validate(t)
}

// alive reports whether pid runs (a zombie waiting to be reaped is dead).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

func TestWorkersTakeOnlyTheirQueues(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cpu := b.startWorker(t, jobs.WorkerOptions{Name: "cpu-worker", Queues: []string{"cpu"}})
	gpu := b.startWorker(t, jobs.WorkerOptions{Name: "gpu-worker", Queues: []string{"gpu"}})
	train := sh("train", "true", "prep")
	train.WorkQueue = "gpu"
	fr, err := b.svc.RunCreate(t.Context(), commands.RunCreateParams{
		WorkQueue: "cpu", Actor: "token:test",
		Flow: domain.FlowSpec{Name: "routed", Tasks: []domain.TaskSpec{sh("prep", "true"), train, sh("report", "true", "train")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	fr = b.wait(t, fr.ID)
	if fr.State.Type != domain.Completed {
		t.Fatalf("flow run ended %s (%s)", fr.State.Type, fr.State.Message)
	}
	want := map[string]string{"prep": cpu.Name(), "train": gpu.Name(), "report": cpu.Name()}
	for name, h := range b.tasks(t, fr) {
		started := h.of("TaskRunStarted")[0].Event.(domain.TaskRunStarted)
		if started.Worker != want[name] {
			t.Errorf("task %s ran on %s, want %s", name, started.Worker, want[name])
		}
		if actor := h.of("TaskRunStarted")[0].Metadata.Actor; actor != "worker:"+want[name] {
			t.Errorf("task %s start recorded by %q", name, actor)
		}
	}
	var online int
	if err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM worker_status WHERE online`).Scan(&online); err != nil || online != 2 {
		t.Errorf("%d workers online (%v), want 2", online, err)
	}
	b.validate(t)
}

func TestCommandEnvironment(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, jobs.WorkerOptions{Env: []string{
		"PATH=" + os.Getenv("PATH"), "HOME=/home/worker", "WORKER_SECRET=hunter2", "SHARED_CONFIG=visible",
	}})
	task := sh("env", `env`)
	task.InheritEnv = []string{"SHARED_CONFIG", "NOT_SET_ANYWHERE"}
	task.Env = map[string]string{"TASK_VAR": "x"}
	fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "env", Tasks: []domain.TaskSpec{task}}, nil).ID)
	if fr.State.Type != domain.Completed {
		t.Fatalf("flow run ended %s (%s)", fr.State.Type, fr.State.Message)
	}
	lines, err := jobs.ReadLogs(t.Context(), b.pool, fr.ID, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, l := range lines {
		if l.Stream == jobs.StreamStdout {
			k, v, _ := strings.Cut(l.Message, "=")
			env[k] = v
		}
	}
	if _, leaked := env["WORKER_SECRET"]; leaked {
		t.Error("a worker variable the task did not declare is visible to it")
	}
	if env["SHARED_CONFIG"] != "visible" || env["TASK_VAR"] != "x" || env["HOME"] != "/home/worker" {
		t.Errorf("declared variables missing: %v", env)
	}
	if env["ORDO_RUN_ID"] != fr.ID.String() || env["ORDO_TASK_NAME"] != "env" || env["ORDO_ATTEMPT"] != "1" || env["ORDO_INPUTS"] != "{}" {
		t.Errorf("contract variables wrong: %v", env)
	}
	allowed := []string{"PATH", "HOME", "SHARED_CONFIG", "TASK_VAR", "PWD", "SHLVL", "_", "OLDPWD"}
	for k := range env {
		if !strings.HasPrefix(k, "ORDO_") && !slices.Contains(allowed, k) {
			t.Errorf("unexpected variable %s in the task's environment", k)
		}
	}
	b.validate(t)
}

func TestInvalidResultFails(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, jobs.WorkerOptions{})
	fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "badresult", Tasks: []domain.TaskSpec{
		sh("t", `echo 'not json' > "$ORDO_RESULT_PATH"`),
	}}, nil).ID)
	h := b.tasks(t, fr)["t"]
	if fr.State.Type != domain.Failed || h.run.LastFailure == nil || !strings.Contains(h.run.LastFailure.Error, "ORDO_RESULT_PATH is not valid JSON") {
		t.Fatalf("run %s, task failure %+v; want FAILED because the result is not JSON", fr.State.Type, h.run.LastFailure)
	}
	b.validate(t)
}

func TestGoHandlers(t *testing.T) {
	t.Parallel()
	var handlers jobs.Handlers
	handlers.Handle("double", func(ctx context.Context, tc jobs.TaskContext) (any, error) {
		var seed float64
		if err := json.Unmarshal(tc.Inputs["seed"], &seed); err != nil {
			return nil, err
		}
		tc.Logger.Info("doubling", "seed", seed, "attempt", tc.Attempt)
		return map[string]any{"value": seed * tc.Parameters["factor"].(float64), "task": tc.TaskName}, nil
	})
	handlers.Handle("refuse", func(ctx context.Context, tc jobs.TaskContext) (any, error) {
		return nil, errors.New("the model did not converge")
	})
	handlers.Handle("save", func(ctx context.Context, tc jobs.TaskContext) (any, error) {
		ws, err := tc.Workspace()
		if err != nil {
			return nil, err
		}
		return ws, os.WriteFile(filepath.Join(ws, "model.txt"), []byte("fitted"), 0o600)
	})
	handlers.Handle("load", func(ctx context.Context, tc jobs.TaskContext) (any, error) {
		ws, err := tc.Workspace()
		if err != nil {
			return nil, err
		}
		model, err := os.ReadFile(filepath.Join(ws, "model.txt"))
		return string(model), err
	})
	handlers.Handle("meddle", func(ctx context.Context, tc jobs.TaskContext) (any, error) {
		opts := tc.Parameters["opts"].(map[string]any)
		fast := opts["fast"]
		opts["fast"] = "changed by a handler" // nothing the worker keeps may see this
		tc.Parameters["added"] = true
		return fast, nil
	})
	b := setup(t)
	b.startWorker(t, jobs.WorkerOptions{Handlers: &handlers})

	t.Run("ParametersChangedByAHandlerStayItsOwn", func(t *testing.T) {
		t.Parallel()
		flow := domain.FlowSpec{Name: "meddle", Tasks: []domain.TaskSpec{
			{Name: "first", Handler: "meddle", Parameters: map[string]any{"opts": map[string]any{"fast": true}}},
			{Name: "second", Handler: "meddle", DependsOn: []string{"first"}, Parameters: map[string]any{"opts": map[string]any{"fast": true}}},
		}}
		for i := range 2 { // two runs of one spec: the worker decodes the spec once
			fr := b.wait(t, b.create(t, flow, nil).ID)
			tasks := b.tasks(t, fr)
			if fr.State.Type != domain.Completed || compact(t, tasks["first"].run.Result) != "true" || compact(t, tasks["second"].run.Result) != "true" {
				t.Fatalf("run %d ended %s with first %s, second %s; want both to see their parameters as written", i+1, fr.State.Type, tasks["first"].run.Result, tasks["second"].run.Result)
			}
		}
	})
	t.Run("Completes", func(t *testing.T) {
		t.Parallel()
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "handlers", Tasks: []domain.TaskSpec{
			sh("seed", `echo 21 > "$ORDO_RESULT_PATH"`),
			{Name: "double", Handler: "double", DependsOn: []string{"seed"}},
		}}, map[string]any{"factor": 2}).ID)
		if fr.State.Type != domain.Completed {
			t.Fatalf("flow run ended %s (%s)", fr.State.Type, fr.State.Message)
		}
		var got map[string]any
		if err := json.Unmarshal(fr.Result, &got); err != nil || got["value"] != 42.0 || got["task"] != "double" {
			t.Errorf("result %s, want value 42 from task double", fr.Result)
		}
		lines, err := jobs.ReadLogs(t.Context(), b.pool, fr.ID, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(lines, func(l jobs.LogLine) bool {
			return l.TaskRunID == fr.TaskRunIDs["double"] && l.Level == "INFO" && l.Message == "doubling seed=21 attempt=1"
		}) {
			t.Errorf("the handler's log line is not stored: %+v", lines)
		}
	})
	t.Run("ErrorAndUnknownHandlerFail", func(t *testing.T) {
		t.Parallel()
		for handler, want := range map[string]string{
			"refuse": "the model did not converge",
			"nope":   "no handler nope registered on this worker",
		} {
			fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "h", Tasks: []domain.TaskSpec{{Name: "t", Handler: handler}}}, nil).ID)
			f := b.tasks(t, fr)["t"].run.LastFailure
			if fr.State.Type != domain.Failed || f == nil || f.Error != want {
				t.Errorf("handler %s: run %s, failure %+v; want FAILED with %q", handler, fr.State.Type, f, want)
			}
			// no task of the run asked for its workspace
			if _, err := os.Stat(filepath.Join(b.workspace, fr.ID.String())); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("handler %s: a workspace was made for a run that never asked for one (%v)", handler, err)
			}
		}
	})
	t.Run("WorkspaceMadeWhenAsked", func(t *testing.T) {
		t.Parallel()
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "ws", Tasks: []domain.TaskSpec{
			{Name: "save", Handler: "save"},
			{Name: "load", Handler: "load", DependsOn: []string{"save"}},
		}}, nil).ID)
		if fr.State.Type != domain.Completed || compact(t, fr.Result) != `"fitted"` {
			t.Fatalf("flow run ended %s with %s (%s); want COMPLETED with what save wrote", fr.State.Type, fr.Result, fr.State.Message)
		}
		var saved string
		if err := json.Unmarshal(b.tasks(t, fr)["save"].run.Result, &saved); err != nil || saved != filepath.Join(b.workspace, fr.ID.String()) {
			t.Errorf("save's workspace was %q (%v), want the run's directory under the worker's workspace dir", saved, err)
		}
	})
	t.Cleanup(func() { b.validate(t) })
}

func TestRunCreate(t *testing.T) {
	t.Parallel()

	t.Run("IdempotencyKey", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		flow := domain.FlowSpec{Name: "once", Tasks: []domain.TaskSpec{sh("t", "true")}}
		p := commands.RunCreateParams{Flow: flow, IdempotencyKey: "req-1", Actor: "token:test"}
		first, err := b.svc.RunCreate(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		again, err := b.svc.RunCreate(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		if again.ID != first.ID {
			t.Errorf("a retried create made run %s, want the first run %s", again.ID, first.ID)
		}
		p.IdempotencyKey = "req-2"
		other, err := b.svc.RunCreate(t.Context(), p)
		if err != nil || other.ID == first.ID {
			t.Errorf("another key gave %s, %v; want a new run", other.ID, err)
		}
		var runs, jobsQueued int
		b.pool.QueryRow(t.Context(), `SELECT count(*) FROM events WHERE type = 'FlowRunCreated'`).Scan(&runs)
		b.pool.QueryRow(t.Context(), `SELECT count(*) FROM river_job WHERE kind = 'ordo.task_run'`).Scan(&jobsQueued)
		if runs != 2 || jobsQueued != 2 {
			t.Errorf("%d runs and %d jobs, want 2 and 2", runs, jobsQueued)
		}
		b.validate(t)
	})

	t.Run("InvalidFlow", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.svc.RunCreate(t.Context(), commands.RunCreateParams{Flow: domain.FlowSpec{Name: "x", Tasks: []domain.TaskSpec{sh("a", "true", "zzz")}}})
		if domain.ErrorCode(err) != domain.CodeInvalid || !strings.Contains(err.Error(), "flow.tasks[0].depends_on") {
			t.Errorf("got %v, want an invalid error naming the field", err)
		}
	})

	t.Run("ScheduledRunStartsOnTime", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{})
		due := time.Now().Add(1200 * time.Millisecond)
		fr, err := b.svc.RunCreate(t.Context(), commands.RunCreateParams{
			Flow: domain.FlowSpec{Name: "later", Tasks: []domain.TaskSpec{sh("t", "true")}}, ScheduledAt: due, Actor: "scheduler",
		})
		if err != nil {
			t.Fatal(err)
		}
		if fr.State.Type != domain.Scheduled {
			t.Fatalf("a run due later is %s, want SCHEDULED", fr.State.Type)
		}
		fr = b.wait(t, fr.ID)
		started := b.tasks(t, fr)["t"].of("TaskRunStarted")[0].RecordedAt
		t.Logf("started %v after due", started.Sub(due))
		if late := started.Sub(due); late < -50*time.Millisecond || late > time.Second {
			t.Errorf("the run started %v after it was due, want within a second", late)
		}
		b.validate(t)
	})
}

func TestWorkerHeartbeat(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w, err := jobs.NewWorker(b.pool, b.store, jobs.WorkerOptions{Name: "hb", Queues: []string{"q1", "q2"}, HeartbeatInterval: 50 * time.Millisecond, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var started, beat time.Time
	var queues []string
	// a heartbeat comes every 50 ms; a loaded machine may delay the first
	eventually(t, time.Minute, "no heartbeat after the worker's start", func() bool {
		if err := b.pool.QueryRow(t.Context(), `SELECT started_at, last_heartbeat_at, queues FROM workers WHERE name = 'hb'`).Scan(&started, &beat, &queues); err != nil {
			t.Fatal(err)
		}
		return beat.After(started)
	})
	if !slices.Equal(queues, []string{"q1", "q2"}) {
		t.Errorf("worker row: started %v, heartbeat %v, queues %v", started, beat, queues)
	}
	if err := w.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	var stopped bool
	if err := b.pool.QueryRow(t.Context(), `SELECT stopped_at IS NOT NULL FROM workers WHERE name = 'hb'`).Scan(&stopped); err != nil || !stopped {
		t.Errorf("stopped_at not recorded: %v", err)
	}
}

func TestWorkerOptionsValidate(t *testing.T) {
	t.Parallel()
	_, err := jobs.NewWorker(nil, nil, jobs.WorkerOptions{Queues: []string{"bad queue"}})
	if domain.ErrorCode(err) != domain.CodeInvalid || !strings.Contains(err.Error(), "Queues") {
		t.Errorf("got %v, want an invalid error naming Queues", err)
	}
}
