package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

// Manual runs follow the lateness rule of scheduled runs: not started
// LateAfter after their scheduled time, they become Late.
func TestManualRunsBecomeLate(t *testing.T) {
	t.Parallel()

	t.Run("AtTheThreshold", func(t *testing.T) {
		t.Parallel()
		b := schedSetup(t)
		ctx := t.Context()
		spec := scheduledSpec("manual-late", nil)
		spec.WorkQueue = "nobody" // no worker takes it
		d := b.deploy(t, spec)
		now, err := b.runs.RunFromDeployment(ctx, d.ID, commands.RunRequest{Name: "now"}, "token:test")
		if err != nil {
			t.Fatal(err)
		}
		if now.State.Type != domain.Scheduled {
			t.Fatalf("a manual run due now is %s, want SCHEDULED until a worker starts it", now.State.Type)
		}
		later, err := b.runs.RunFromDeployment(ctx, d.ID, commands.RunRequest{Name: "later", ScheduledAt: now.ScheduledAt.Add(time.Minute)}, "token:test")
		if err != nil {
			t.Fatal(err)
		}

		const lateAfter = 5 * time.Second
		at := func(clock time.Time) {
			t.Helper()
			tick(t, b.scheduler(t, jobs.SchedulerOptions{LateAfter: lateAfter, Now: func() time.Time { return clock }}))
		}
		isLate := func(fr domain.FlowRun) bool { return b.flowRun(t, fr.ID).State.Name == domain.NameLate }

		at(now.ScheduledAt.Add(lateAfter - time.Millisecond))
		if isLate(now) || isLate(later) {
			t.Fatal("a run was marked Late before the threshold")
		}
		at(now.ScheduledAt.Add(lateAfter))
		if !isLate(now) || isLate(later) {
			t.Fatalf("at its threshold the run due now is %+v and the later one %+v, want only the first Late", b.flowRun(t, now.ID).State, b.flowRun(t, later.ID).State)
		}
		e, _ := b.lastEvent(t, now.ID, "FlowRunLate")
		if e.Metadata.Reason != "not started within 5s of its scheduled time" || e.Metadata.Actor != commands.SchedulerActor {
			t.Errorf("FlowRunLate of the manual run: %+v", e.Metadata)
		}
		at(later.ScheduledAt.Add(lateAfter))
		if !isLate(later) {
			t.Fatalf("the run with a future scheduled_at is %+v after its threshold, want Late", b.flowRun(t, later.ID).State)
		}
		at(later.ScheduledAt.Add(time.Hour)) // checked once: nothing more happens
		var left int
		if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM run_lateness_checks`).Scan(&left); err != nil || left != 0 {
			t.Fatalf("%d lateness checks left (%v), want none", left, err)
		}

		// A worker comes: the late runs run.
		b.startWorker(t, jobs.WorkerOptions{Queues: []string{"nobody"}, Handlers: noopHandlers})
		if fr := b.wait(t, now.ID); fr.State.Type != domain.Completed {
			t.Fatalf("the late run ended %s once a worker came", fr.State.Type)
		}
		b.validate(t)
	})

	t.Run("NoWorkerWithRunningScheduler", func(t *testing.T) {
		t.Parallel()
		b := schedSetup(t)
		ctx := t.Context()
		spec := scheduledSpec("manual-no-worker", nil)
		spec.WorkQueue = "nobody"
		d := b.deploy(t, spec)
		b.startWorker(t, jobs.WorkerOptions{Handlers: noopHandlers}) // on another queue
		onTime := b.deploy(t, scheduledSpec("manual-on-time", nil))
		runScheduler(t, b.scheduler(t, jobs.SchedulerOptions{LateAfter: time.Second, Interval: 100 * time.Millisecond}))

		stuck, err := b.runs.RunFromDeployment(ctx, d.ID, commands.RunRequest{}, "token:test")
		if err != nil {
			t.Fatal(err)
		}
		ran, err := b.runs.RunFromDeployment(ctx, onTime.ID, commands.RunRequest{}, "token:test")
		if err != nil {
			t.Fatal(err)
		}
		if fr := b.wait(t, ran.ID); fr.State.Type != domain.Completed {
			t.Fatalf("the run with a worker ended %s", fr.State.Type)
		}
		eventually(t, time.Minute, "the run with no worker did not become Late", func() bool {
			return b.flowRun(t, stuck.ID).State.Name == domain.NameLate
		})
		e, _ := b.lastEvent(t, stuck.ID, "FlowRunLate")
		if e.RecordedAt.Before(stuck.ScheduledAt.Add(time.Second)) {
			t.Errorf("marked Late at %v, before its threshold %v", e.RecordedAt, stuck.ScheduledAt.Add(time.Second))
		}
		eventually(t, time.Minute, "the lateness check of the run that started was not removed", func() bool {
			var left int
			err := b.pool.QueryRow(context.Background(), `SELECT count(*) FROM run_lateness_checks`).Scan(&left)
			return err == nil && left == 0
		})
		if _, late := b.lastEvent(t, ran.ID, "FlowRunLate"); late {
			t.Error("the run a worker started in time was marked Late")
		}
		b.validate(t)
	})
}
