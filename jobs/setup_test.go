package jobs_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/jobs"
)

type testBundle struct {
	pool      *pgxpool.Pool
	store     *eventstore.Store
	svc       *jobs.Service
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
		svc:       jobs.NewService(pool, store, client, jobs.ServiceOptions{}),
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
	fr, err := b.svc.RunCreate(t.Context(), jobs.RunCreateParams{
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
