package jobs_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/jobs"
)

type testBundle struct {
	pool      *pgxpool.Pool
	store     *eventstore.Store
	svc       *commands.Service
	workspace string
}

func setup(t *testing.T) testBundle {
	t.Helper()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, domain.NewRegistry())
	t.Cleanup(store.Close)
	client, err := jobs.NewInsertClient(pool)
	if err != nil {
		t.Fatal(err)
	}
	return testBundle{
		pool: pool, store: store,
		svc:       commands.NewService(pool, store, jobs.RiverEnqueuer(client), commands.ServiceOptions{}),
		workspace: t.TempDir(),
	}
}

var quietLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

// startWorker starts a worker with test defaults and stops it when the
// test ends.
func (b testBundle) startWorker(t *testing.T, opts jobs.WorkerOptions) *jobs.Worker {
	t.Helper()
	if opts.Queues == nil {
		opts.Queues = []string{domain.DefaultWorkQueue}
	}
	if opts.WorkspaceDir == "" {
		opts.WorkspaceDir = b.workspace
	}
	if opts.KillGrace == 0 {
		opts.KillGrace = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = quietLogger
	}
	w, err := jobs.NewWorker(b.pool, b.store, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("stop worker: %v", err)
		}
	})
	return w
}

// create creates a run of flow due now on queue "default".
func (b testBundle) create(t *testing.T, flow domain.FlowSpec, params map[string]any) domain.FlowRun {
	t.Helper()
	if err := flow.Validate(); err != nil {
		t.Fatalf("test flow: %v", err)
	}
	fr, err := b.svc.RunCreate(t.Context(), commands.RunCreateParams{
		DeploymentName: "test", Flow: flow, Parameters: params, Actor: "token:test",
	})
	if err != nil {
		t.Fatal(err)
	}
	return fr
}

// wait returns the flow run once it is terminal.
func (b testBundle) wait(t *testing.T, id uuid.UUID) domain.FlowRun {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		fr := b.flowRun(t, id)
		if fr.State.Type.Terminal() {
			return fr
		}
		if time.Now().After(deadline) {
			t.Fatalf("flow run %s still %s after 20s", id, fr.State.Type)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b testBundle) flowRun(t *testing.T, id uuid.UUID) domain.FlowRun {
	t.Helper()
	envs, err := b.store.ReadStream(t.Context(), b.pool, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	fr := domain.FlowRun{ID: id}
	for _, e := range envs {
		fr = fr.Apply(e.Event, e.RecordedAt)
		fr.Version = e.Version
	}
	return fr
}

// taskHistory is a task run's state and its events.
type taskHistory struct {
	run    domain.TaskRun
	events []domain.Envelope
}

func (h taskHistory) of(eventType string) []domain.Envelope {
	var out []domain.Envelope
	for _, e := range h.events {
		if e.Type == eventType {
			out = append(out, e)
		}
	}
	return out
}

// tasks returns every task run of fr by task name.
func (b testBundle) tasks(t *testing.T, fr domain.FlowRun) map[string]taskHistory {
	t.Helper()
	out := map[string]taskHistory{}
	for name, id := range fr.TaskRunIDs {
		envs, err := b.store.ReadStream(t.Context(), b.pool, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		h := taskHistory{run: domain.TaskRun{ID: id}, events: envs}
		for _, e := range envs {
			h.run = h.run.Apply(e.Event, e.RecordedAt)
		}
		out[name] = h
	}
	return out
}

// validate reads the whole log and checks every event is a legal transition.
func (b testBundle) validate(t *testing.T) {
	t.Helper()
	ctx := context.Background() // also called from cleanups
	var total int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	var (
		all   []domain.Envelope
		after eventstore.Checkpoint
	)
	deadline := time.Now().Add(10 * time.Second)
	for len(all) < total {
		envs, err := b.store.ReadAll(ctx, b.pool, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(envs) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("read %d of %d events of the log", len(all), total)
			}
			time.Sleep(20 * time.Millisecond) // held back by a transaction elsewhere on the server
			continue
		}
		all = append(all, envs...)
		after = eventstore.CheckpointOf(envs[len(envs)-1])
	}
	if err := domain.ValidateLog(b.store.Registry(), all); err != nil {
		t.Fatalf("the log breaks the rules: %v", err)
	}
	for _, e := range all {
		if e.Metadata.Actor == "" {
			t.Fatalf("event %d (%s) has no actor", e.Position, e.Type)
		}
	}
}

// sh is a command task running script in sh.
func sh(name, script string, deps ...string) domain.TaskSpec {
	return domain.TaskSpec{Name: name, Command: []string{"sh", "-c", script}, DependsOn: deps}
}

// setupURL is setup on a database that other processes can reach at url.
func setupURL(t *testing.T) (testBundle, string) {
	t.Helper()
	url := pgtest.URL(t)
	pool, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return bundleOn(t, pool), url
}

func bundleOn(t *testing.T, pool *pgxpool.Pool) testBundle {
	t.Helper()
	store := eventstore.New(pool, domain.NewRegistry())
	t.Cleanup(store.Close)
	client, err := jobs.NewInsertClient(pool)
	if err != nil {
		t.Fatal(err)
	}
	return testBundle{
		pool: pool, store: store,
		svc:       commands.NewService(pool, store, jobs.RiverEnqueuer(client), commands.ServiceOptions{}),
		workspace: t.TempDir(),
	}
}

// startReaper runs a reaper until the test ends.
func (b testBundle) startReaper(t *testing.T, opts jobs.ReaperOptions) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger
	}
	r, err := jobs.NewReaper(b.pool, b.store, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// waitUntil waits up to d for cond to hold.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// taskEvents returns the events of one task run of fr.
func (b testBundle) taskEvents(t *testing.T, fr domain.FlowRun, task string) taskHistory {
	t.Helper()
	envs, err := b.store.ReadStream(context.Background(), b.pool, fr.TaskRunIDs[task], 0)
	if err != nil {
		t.Fatal(err)
	}
	h := taskHistory{run: domain.TaskRun{ID: fr.TaskRunIDs[task]}, events: envs}
	for _, e := range envs {
		h.run = h.run.Apply(e.Event, e.RecordedAt)
	}
	return h
}

// readPid reads a pid a task wrote to a file, once it exists.
func readPid(t *testing.T, path string) int {
	t.Helper()
	var pid int
	waitUntil(t, time.Minute, "pid file "+path, func() bool {
		raw, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(raw)))
		return err == nil && pid > 0
	})
	return pid
}

// waitGone waits for pid to exit, and kills it when it does not.
func waitGone(t *testing.T, pid int, d time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("%s: process %d still runs after %v", what, pid, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testLogger returns a logger whose output is shown only when the test
// fails: for tests where warnings are expected (a database restart, dead
// workers).
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	buf := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
