package jobs_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
	"github.com/ordoflow/ordo/riverjob"
)

// A due timer whose fallback poll is out of reach (an hour), observed.
func startDueTimer(t *testing.T, b testBundle) <-chan string {
	t.Helper()
	d := jobs.NewDueTimer(b.pool, jobs.DueTimerOptions{PollInterval: time.Hour, Logger: quietLogger})
	events := make(chan string, 1000)
	jobs.ObserveDueTimer(d, events)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return events
}

// awaitEvent waits for the timer to report want, skipping other events.
func awaitEvent(t *testing.T, events <-chan string, want string) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case e := <-events:
			if e == want {
				return
			}
		case <-timeout:
			t.Fatalf("the due timer did not report %q", want)
		}
	}
}

// listenInserts listens for River's insert notifications and returns the
// queues they name.
func listenInserts(t *testing.T, b testBundle) <-chan string {
	t.Helper()
	conn, err := pgx.ConnectConfig(t.Context(), b.pool.Config().ConnConfig.Copy())
	if err != nil {
		t.Fatal(err)
	}
	var schema string
	if err := conn.QueryRow(t.Context(), `SELECT current_schema()`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), `LISTEN `+pgx.Identifier{schema + ".river_insert"}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	queues := make(chan string, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				return
			}
			var p struct {
				Queue string `json:"queue"`
			}
			if json.Unmarshal([]byte(n.Payload), &p) == nil {
				queues <- p.Queue
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; conn.Close(context.Background()) })
	return queues
}

// River's own scheduler makes jobs due in its next 5 s available ahead of
// time and notifies only those already due. When such a move commits while
// the due timer waits for the job's row lock, the job's time having come,
// the timer must still wake the job's workers: else the job waits for their
// fetch poll.
func TestDueTimerWakesJobsRiverMovedWhileItWaited(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	inserts := listenInserts(t, b)
	const queue = "moved-by-river"
	var id int64
	if err := b.pool.QueryRow(ctx, `
INSERT INTO river_job (args, kind, max_attempts, queue, priority, scheduled_at, state)
VALUES ('{}', $1, 1, $2, 1, now() - interval '1 millisecond', 'scheduled') RETURNING id`, riverjob.KindTaskRun, queue).Scan(&id); err != nil {
		t.Fatal(err)
	}
	// River's scheduler, its commit slow: it locked the job when it was not
	// due yet, so it will not notify.
	riverTx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer riverTx.Rollback(context.Background()) //nolint:errcheck // committed below
	if _, err := riverTx.Exec(ctx, `UPDATE river_job SET state = 'available' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}

	startDueTimer(t, b)
	waitUntil(t, time.Minute, "the due timer waits for the row River locked", func() bool {
		var waiting bool
		err := b.pool.QueryRow(ctx, `
SELECT EXISTS (SELECT 1 FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%UPDATE river_job SET state = ''available''%')`).Scan(&waiting)
		return err == nil && waiting
	})
	if err := riverTx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case q := <-inserts:
		if q != queue {
			t.Fatalf("notified queue %q, want %q", q, queue)
		}
	case <-time.After(time.Minute):
		t.Fatal("the workers of the job's queue were never told it is due: it is left to their fetch poll")
	}
}

// A run queued for later by a transaction that commits after the due timer
// read the next due time (here: by another process's service, which has no
// timer to wake) is made available at its time, not at the timer's next
// poll.
func TestDueTimerHearsJobsQueuedLaterElsewhere(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	events := startDueTimer(t, b)
	awaitEvent(t, events, "listening")
	awaitEvent(t, events, "sleep") // it read the next due time: none

	due := time.Now().Add(time.Second)
	run, err := b.svc.RunCreate(ctx, commands.RunCreateParams{
		Flow:        domain.FlowSpec{Name: "later", Tasks: []domain.TaskSpec{{Name: "t", Command: []string{"true"}}}},
		ScheduledAt: due,
	})
	if err != nil {
		t.Fatal(err)
	}
	var state string
	deadline := time.Now().Add(time.Minute)
	for state != "available" {
		if time.Now().After(deadline) {
			// What the timer did meanwhile, to tell a lost notification
			// from a wake-up that read no due job.
			var seen []string
			for len(events) > 0 {
				seen = append(seen, <-events)
			}
			t.Fatalf("the run's job is %q a minute after it was queued for %v; the timer's events since it slept: %v", state, due, seen)
		}
		time.Sleep(20 * time.Millisecond)
		if err := b.pool.QueryRow(ctx, `
SELECT state FROM river_job WHERE kind = $1 AND args->>'flow_run_id' = $2`, riverjob.KindTaskRun, run.ID.String()).Scan(&state); err != nil {
			state = err.Error()
		}
	}
	if time.Now().Before(due) {
		t.Errorf("made available before its time %v", due)
	}
}

// A job queued for after the timer's next look does not wake it (thousands
// of runs created an hour ahead would wake every timer thousands of times);
// one due before does.
func TestDueTimerWakesOnlyForJobsDueBeforeItLooksAgain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	events := startDueTimer(t, b) // looks again within the hour at the latest
	// Once it listens, the timer wakes itself to read what was queued
	// before; that wake-up can come while it ticks, after which it ticks
	// again. The sleep to wait for is the one after it: until then, any
	// notification wakes it.
	awaitEvent(t, events, "listening")
	awaitEvent(t, events, "woken")
	awaitEvent(t, events, "sleep")

	flow := domain.FlowSpec{Name: "ahead", Tasks: []domain.TaskSpec{{Name: "t", Command: []string{"true"}}}}
	if _, err := b.svc.RunCreate(ctx, commands.RunCreateParams{Flow: flow, ScheduledAt: time.Now().Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if e := nextHeard(t, events); e != "heard: not needed" {
		t.Errorf("a run due in two hours: %q, want the timer left asleep", e)
	}
	if _, err := b.svc.RunCreate(ctx, commands.RunCreateParams{Flow: flow, ScheduledAt: time.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if e := nextHeard(t, events); e != "heard: woke" {
		t.Errorf("a run due in a minute: %q, want the timer woken", e)
	}
}

// nextHeard returns the timer's next report of a notification.
func nextHeard(t *testing.T, events <-chan string) string {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case e := <-events:
			if strings.HasPrefix(e, "heard: ") {
				return e
			}
		case <-timeout:
			t.Fatal("the due timer heard no notification")
		}
	}
}
