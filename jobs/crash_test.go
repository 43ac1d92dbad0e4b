package jobs_test

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

// Heartbeats in these tests come every 100ms; a worker is dead after 2s
// without one.
var testReaper = jobs.ReaperOptions{Interval: 100 * time.Millisecond, DeadAfter: 2 * time.Second}

func TestWorkerKilledMidTask(t *testing.T) {
	t.Parallel()
	b, url := setupURL(t)
	doomed := b.startWorkerProcess(t, url, "doomed", "default")

	// Attempt 1 becomes `sleep 600`; attempt 2 succeeds.
	work := sh("work", `echo $$ > "$ORDO_WORKSPACE/work-$ORDO_ATTEMPT.pid"
if [ "$ORDO_ATTEMPT" = 1 ]; then exec sleep 600; fi
echo '"survived"' > "$ORDO_RESULT_PATH"`)
	work.Retries = 1
	fr := b.create(t, domain.FlowSpec{Name: "crashy", Tasks: []domain.TaskSpec{
		work, sh("next", `printf '%s' "$ORDO_INPUTS" > "$ORDO_RESULT_PATH"`, "work"),
	}}, nil)
	pid := readPid(t, filepath.Join(b.workspace, fr.ID.String(), "work-1.pid"))

	doomed.signal(t, syscall.SIGKILL)
	doomed.wait(t)
	killed := time.Now()
	// The kernel kills the task of a worker that died (Pdeathsig).
	waitGone(t, pid, 2*time.Second, "the task of the killed worker")

	b.startReaper(t, jobs.ReaperOptions{Interval: testReaper.Interval, DeadAfter: testReaper.DeadAfter, Logger: testLogger(t)})
	rescuer := b.startWorker(t, jobs.WorkerOptions{Name: "rescuer", HeartbeatInterval: 100 * time.Millisecond})
	fr = b.wait(t, fr.ID)
	if fr.State.Type != domain.Completed || compact(t, fr.Result) != `{"work":"survived"}` {
		t.Fatalf("flow run ended %s (%s) with %s, want COMPLETED with the second attempt's result", fr.State.Type, fr.State.Message, fr.Result)
	}
	h := b.tasks(t, fr)["work"]
	retry := h.of("TaskRunRetryScheduled")
	if len(retry) != 1 {
		t.Fatalf("%d retries recorded, want 1 for the crashed attempt", len(retry))
	}
	t.Logf("the killed attempt was recorded as crashed %v after the kill", retry[0].RecordedAt.Sub(killed).Round(time.Millisecond))
	if f := retry[0].Event.(domain.TaskRunRetryScheduled); !f.Crashed || f.Attempt != 1 || !strings.Contains(f.Error, "worker doomed") || retry[0].Metadata.Actor != "reaper" {
		t.Errorf("crash record %+v by %q, want attempt 1 crashed by the reaper naming the worker", f.AttemptFailure, retry[0].Metadata.Actor)
	}
	starts := h.of("TaskRunStarted")
	if len(starts) != 2 || starts[0].Event.(domain.TaskRunStarted).Worker != "doomed" || starts[1].Event.(domain.TaskRunStarted).Worker != rescuer.Name() {
		t.Errorf("attempts ran on %+v, want doomed then rescuer", starts)
	}
	var completions, dead, discarded int
	b.pool.QueryRow(t.Context(), `SELECT count(*) FROM events WHERE type = 'TaskRunCompleted'`).Scan(&completions)
	b.pool.QueryRow(t.Context(), `SELECT count(*) FROM workers WHERE name = 'doomed' AND dead_at IS NOT NULL`).Scan(&dead)
	b.pool.QueryRow(t.Context(), `SELECT count(*) FROM river_job WHERE state = 'discarded' AND args ->> 'attempt' = '1' AND args ->> 'task_run_id' = $1::text`, fr.TaskRunIDs["work"]).Scan(&discarded)
	if completions != 2 || dead != 1 || discarded != 1 {
		t.Errorf("%d completions (want 2, one per task), doomed declared dead %d times (want 1), its job discarded %d times (want 1)", completions, dead, discarded)
	}
	b.validate(t)
}

// TestZombieResultRefused: a worker that stops (SIGSTOP) is declared dead
// and its attempt runs again elsewhere; when it comes back and reports the
// old attempt's result, the result is recorded as refused and not applied.
func TestZombieResultRefused(t *testing.T) {
	t.Parallel()
	b, url := setupURL(t)
	zombie := b.startWorkerProcess(t, url, "zombie", "default")
	work := sh("work", `sleep 1; echo "\"attempt $ORDO_ATTEMPT\"" > "$ORDO_RESULT_PATH"`)
	work.Retries = 1
	fr := b.create(t, domain.FlowSpec{Name: "zombie", Tasks: []domain.TaskSpec{work}}, nil)
	waitUntil(t, time.Minute, "attempt 1 starts", func() bool {
		return len(b.taskEvents(t, fr, "work").of("TaskRunStarted")) == 1
	})
	zombie.signal(t, syscall.SIGSTOP)

	b.startReaper(t, jobs.ReaperOptions{Interval: testReaper.Interval, DeadAfter: testReaper.DeadAfter, Logger: testLogger(t)})
	b.startWorker(t, jobs.WorkerOptions{Name: "alive", HeartbeatInterval: 100 * time.Millisecond})
	fr = b.wait(t, fr.ID)
	if fr.State.Type != domain.Completed || compact(t, fr.Result) != `"attempt 2"` {
		t.Fatalf("flow run ended %s with %s, want COMPLETED by attempt 2", fr.State.Type, fr.Result)
	}

	zombie.signal(t, syscall.SIGCONT)
	var refused domain.TaskRunResultRefused
	waitUntil(t, time.Minute, "the zombie's result is refused", func() bool {
		r := b.taskEvents(t, fr, "work").of("TaskRunResultRefused")
		if len(r) == 0 {
			return false
		}
		refused = r[0].Event.(domain.TaskRunResultRefused)
		return true
	})
	if refused.Attempt != 1 || refused.CurrentAttempt != 2 || refused.Outcome != "completed" {
		t.Errorf("refusal %+v, want attempt 1's completion refused while attempt 2 is current", refused)
	}
	h := b.taskEvents(t, fr, "work")
	if len(h.of("TaskRunCompleted")) != 1 || compact(t, h.run.Result) != `"attempt 2"` {
		t.Errorf("%d completions, result %s: the zombie's result was applied", len(h.of("TaskRunCompleted")), h.run.Result)
	}
	// Back from the dead, it heartbeats again and says so.
	waitUntil(t, time.Minute, "the zombie is alive again", func() bool {
		var online bool
		b.pool.QueryRow(t.Context(), `SELECT online FROM worker_status WHERE name = 'zombie'`).Scan(&online)
		return online
	})
	zombie.signal(t, syscall.SIGTERM)
	zombie.wait(t)
	b.validate(t)
}

// TestReaperRequeuesUnstartedJob: a job a worker fetched but died before
// starting runs again on another worker; a reaper pass that finds nothing
// changes nothing.
func TestReaper(t *testing.T) {
	t.Parallel()
	b := setup(t)
	fr := b.create(t, domain.FlowSpec{Name: "r", Tasks: []domain.TaskSpec{sh("t", "true")}}, nil)
	// A worker that fetched the job and died before recording the start.
	ctx := t.Context()
	if _, err := b.pool.Exec(ctx, `
INSERT INTO workers (id, name, queues, hostname, pid, last_heartbeat_at)
VALUES ('00000000-0000-0000-0000-00000000dead', 'ghost', '{default}', 'nowhere', 1, now() - interval '1 minute')`); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(ctx, `
UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now(),
    attempted_by = ARRAY['00000000-0000-0000-0000-00000000dead']
WHERE kind = 'ordo.task_run'`); err != nil {
		t.Fatal(err)
	}
	r, err := jobs.NewReaper(b.pool, b.store, jobs.ReaperOptions{DeadAfter: 10 * time.Second, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Reap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Workers != 1 || res.Requeued != 1 || res.Crashed != 0 {
		t.Fatalf("reap: %+v, want one dead worker and one job queued again", res)
	}
	if res, err = r.Reap(ctx); err != nil || res != (jobs.ReapResult{}) {
		t.Fatalf("second reap: %+v, %v; want nothing to do", res, err)
	}
	b.startWorker(t, jobs.WorkerOptions{})
	if fr = b.wait(t, fr.ID); fr.State.Type != domain.Completed {
		t.Fatalf("run ended %s, want COMPLETED", fr.State.Type)
	}
	b.validate(t)
}
