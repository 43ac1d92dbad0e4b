package jobs_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

// sleeper is a task that records its pid and then becomes `sleep 600`.
func sleeper(name string, deps ...string) domain.TaskSpec {
	return sh(name, `echo $$ > "$ORDO_WORKSPACE/`+name+`.pid"; exec sleep 600`, deps...)
}

func TestRunCancel(t *testing.T) {
	t.Parallel()

	for name, opts := range map[string]func(*jobs.WorkerOptions){
		"KillsRunningProcess": func(*jobs.WorkerOptions) {},
		// A notification that never arrives: the periodic check stops it.
		"KillsRunningProcessWithoutNotification": func(o *jobs.WorkerOptions) {
			jobs.DisableCancelListen(o)
			o.CancelCheckInterval = 200 * time.Millisecond
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			wo := jobs.WorkerOptions{Concurrency: 4}
			opts(&wo)
			b.startWorker(t, wo)
			fr := b.create(t, domain.FlowSpec{Name: "long", Tasks: []domain.TaskSpec{
				sleeper("sleep"), sh("after", "true", "sleep"), sh("quick", "true"),
			}}, nil)
			pid := readPid(t, filepath.Join(b.workspace, fr.ID.String(), "sleep.pid"))
			waitUntil(t, time.Minute, "quick completes", func() bool {
				return b.taskEvents(t, fr, "quick").run.State.Type == domain.Completed
			})

			began := time.Now()
			got, err := b.svc.RunCancel(t.Context(), fr.ID, "token:alice")
			if err != nil {
				t.Fatal(err)
			}
			if got.State.Type != domain.Cancelling {
				t.Errorf("RunCancel returned the run %s, want CANCELLING while its task is stopped", got.State.Type)
			}
			fr = b.wait(t, fr.ID)
			t.Logf("cancelled in %v", time.Since(began))
			if fr.State.Type != domain.Cancelled {
				t.Fatalf("flow run ended %s (%s), want CANCELLED", fr.State.Type, fr.State.Message)
			}
			waitGone(t, pid, 2*time.Second, "the cancelled task")
			tasks := b.tasks(t, fr)
			if s := tasks["sleep"].run.State; s.Type != domain.Cancelled || s.Name != domain.NameCancelled {
				t.Errorf("the running task is %s/%s, want CANCELLED/Cancelled", s.Type, s.Name)
			}
			if s := tasks["after"].run.State; s.Type != domain.Cancelled {
				t.Errorf("the downstream task is %s, want CANCELLED", s.Type)
			}
			if c := tasks["after"].of("TaskRunCancelled"); len(c) != 1 || c[0].Metadata.Reason != "cancelled by token:alice" || c[0].Metadata.Actor != "token:alice" {
				t.Errorf("the downstream task's cancellation: %+v", c)
			}
			if s := tasks["quick"].run.State; s.Type != domain.Completed {
				t.Errorf("the finished task is %s, want it to stay COMPLETED", s.Type)
			}
			b.validate(t)
		})
	}

	t.Run("HandlerStops", func(t *testing.T) {
		t.Parallel()
		var handlers jobs.Handlers
		started := make(chan struct{})
		stopped := make(chan error, 1)
		handlers.Handle("block", func(ctx context.Context, tc jobs.TaskContext) (any, error) {
			close(started)
			<-ctx.Done()
			stopped <- context.Cause(ctx)
			return nil, ctx.Err()
		})
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{Handlers: &handlers})
		fr := b.create(t, domain.FlowSpec{Name: "h", Tasks: []domain.TaskSpec{{Name: "block", Handler: "block"}}}, nil)
		<-started
		if _, err := b.svc.RunCancel(t.Context(), fr.ID, "token:test"); err != nil {
			t.Fatal(err)
		}
		if fr = b.wait(t, fr.ID); fr.State.Type != domain.Cancelled {
			t.Fatalf("flow run ended %s, want CANCELLED", fr.State.Type)
		}
		if err := <-stopped; err == nil {
			t.Error("the handler's context ended without a cause")
		}
		b.validate(t)
	})

	t.Run("QueuedRunEndsAtOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t) // no worker: the jobs stay queued
		now := b.create(t, domain.FlowSpec{Name: "q", Tasks: []domain.TaskSpec{sh("a", "true"), sh("b", "true", "a")}}, nil)
		later, err := b.svc.RunCreate(t.Context(), commands.RunCreateParams{
			Flow: domain.FlowSpec{Name: "later", Tasks: []domain.TaskSpec{sh("a", "true")}}, ScheduledAt: time.Now().Add(time.Hour), Actor: "scheduler",
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, fr := range []domain.FlowRun{now, later} {
			got, err := b.svc.RunCancel(t.Context(), fr.ID, "token:test")
			if err != nil {
				t.Fatal(err)
			}
			if got.State.Type != domain.Cancelled {
				t.Errorf("a run with nothing running is %s after RunCancel, want CANCELLED at once", got.State.Type)
			}
			for name, h := range b.tasks(t, got) {
				if h.run.State.Type != domain.Cancelled {
					t.Errorf("task %s is %s, want CANCELLED", name, h.run.State.Type)
				}
			}
		}
		var queued int
		if err := b.pool.QueryRow(t.Context(), `
SELECT count(*) FROM river_job WHERE kind = 'ordo.task_run' AND state NOT IN ('cancelled')`).Scan(&queued); err != nil || queued != 0 {
			t.Errorf("%d jobs still queued (%v), want every job cancelled", queued, err)
		}
		_, err = b.svc.RunCancel(t.Context(), now.ID, "token:test")
		if domain.ErrorCode(err) != domain.CodeConflict {
			t.Errorf("cancelling an ended run: %v, want a conflict", err)
		}
		b.validate(t)
	})
}
