package jobs_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/internal/localpg"
	"github.com/ordoflow/ordo/jobs"
	"github.com/ordoflow/ordo/migrations"
)

// privateServer starts a migrated PostgreSQL server of the test's own,
// which it may stop and start again with opts: never the shared one.
func privateServer(t *testing.T) (localpg.Options, *localpg.Server, *pgxpool.Pool) {
	t.Helper()
	dir, err := os.MkdirTemp("", "ordo-restart-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the server may run as the postgres user
		t.Fatal(err)
	}
	ctx := t.Context()
	opts := localpg.Options{DataDir: filepath.Join(dir, "data"), Fast: true}
	srv, err := localpg.Start(ctx, opts)
	if err != nil {
		t.Skipf("no private PostgreSQL server for this test: %v", err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	pool, err := pgxpool.New(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := migrations.Up(ctx, pool); err != nil {
		t.Fatal(err)
	}
	opts.Port = srv.Port()
	return opts, srv, pool
}

// TestPostgresRestartMidFlow restarts the database while a task runs: the
// worker keeps the outcome until it can record it, reconnects, and the run
// finishes. It runs on a private server, never the shared test server.
func TestPostgresRestartMidFlow(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	opts, srv, pool := privateServer(t)
	b := bundleOn(t, pool)
	b.startWorker(t, jobs.WorkerOptions{HeartbeatInterval: 200 * time.Millisecond, Logger: testLogger(t)})

	// b runs across the restart: it ends while the server is down.
	fr := b.create(t, domain.FlowSpec{Name: "restart", Tasks: []domain.TaskSpec{
		sh("a", `echo '"a"' > "$ORDO_RESULT_PATH"`),
		sh("b", `echo before; sleep 1; echo after; printf '%s' "$ORDO_INPUTS" > "$ORDO_RESULT_PATH"`, "a"),
		sh("c", `printf '%s' "$ORDO_INPUTS" > "$ORDO_RESULT_PATH"`, "b"),
	}}, nil)
	waitUntil(t, time.Minute, "b starts", func() bool {
		return b.taskEvents(t, fr, "b").run.State.Type == domain.Running
	})
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	time.Sleep(1500 * time.Millisecond) // b ends while the server is down
	srv, err := localpg.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the server was down for %v", time.Since(down).Round(time.Millisecond))

	deadline := time.Now().Add(60 * time.Second)
	for {
		got := b.flowRun(t, fr.ID)
		if got.State.Type.Terminal() {
			fr = got
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("flow run still %s a minute after the restart", got.State.Type)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if fr.State.Type != domain.Completed || compact(t, fr.Result) != `{"b":{"a":"a"}}` {
		t.Fatalf("flow run ended %s (%s) with %s, want COMPLETED", fr.State.Type, fr.State.Message, fr.Result)
	}
	h := b.tasks(t, fr)["b"]
	if len(h.of("TaskRunStarted")) != 1 || len(h.of("TaskRunCompleted")) != 1 || len(h.of("TaskRunResultRefused")) != 0 {
		t.Errorf("b: %d starts, %d completions, %d refusals; want its one attempt recorded once", len(h.of("TaskRunStarted")), len(h.of("TaskRunCompleted")), len(h.of("TaskRunResultRefused")))
	}
	lines, err := jobs.ReadLogs(ctx, pool, fr.ID, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var said []string
	for _, l := range lines {
		if l.TaskRunID == fr.TaskRunIDs["b"] && l.Stream == jobs.StreamStdout {
			said = append(said, l.Message)
		}
	}
	if strings.Join(said, ",") != "before,after" {
		t.Errorf("b's output lines %q, want before and after: lines written while the database was down are kept", said)
	}
	b.validate(t)
}

// TestWorkerWithoutPrimaryStartsNothing keeps the database down for longer
// than the worker's heartbeat timeout: the worker says it starts no new
// attempts, and once the database is back it says it starts them again and
// a flow run created then completes.
func TestWorkerWithoutPrimaryStartsNothing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	opts, srv, pool := privateServer(t)
	logs := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker logs:\n%s", logs.String())
		}
	})
	b := bundleOn(t, pool)
	b.startWorker(t, jobs.WorkerOptions{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})

	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Minute, "the worker says it starts no new attempts", func() bool {
		return strings.Contains(logs.String(), "starting no new attempts")
	})
	srv, err := localpg.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Minute, "the worker says it starts attempts again", func() bool {
		return strings.Contains(logs.String(), "starting new attempts again")
	})
	fr := b.create(t, domain.FlowSpec{Name: "after", Tasks: []domain.TaskSpec{sh("a", `echo '"a"' > "$ORDO_RESULT_PATH"`)}}, nil)
	waitUntil(t, time.Minute, "the run created after the outage completes", func() bool {
		return b.flowRun(t, fr.ID).State.Type == domain.Completed
	})
}
