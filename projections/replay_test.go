package projections

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/projections/projtest"
)

func tableDiff(r VerifyReport, table string) TableDiff {
	for _, t := range r.Tables {
		if t.Table == table {
			return t
		}
	}
	return TableDiff{}
}

// TestReplayVerifyFindsDamage damages the live read models and the log,
// and checks that Verify reports each problem by table and key without
// changing anything, and that Replay then repairs the read models.
func TestReplayVerifyFindsDamage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var runs []*projtest.Run
	for range 5 {
		r := b.log.CreateRun(projtest.RunSpec{})
		r.Complete()
		runs = append(runs, r)
	}
	p := newProjector(t, b, ProjectorOptions{})
	catchUp(t, p)
	if report, err := Verify(ctx, b.pool, b.store, ReplayOptions{}); err != nil || !report.Clean {
		t.Fatalf("before any damage: %v\n%s", err, report.String())
	}

	for _, stmt := range []string{
		`UPDATE flow_runs SET name = 'edited', run_count = 9 WHERE id = '` + runs[0].ID.String() + `'`,
		`DELETE FROM state_history WHERE stream_id = '` + runs[1].ID.String() + `' AND version = 2`,
		`INSERT INTO task_run_attempts (task_run_id, attempt, flow_run_id, outcome) VALUES ('` + runs[2].Tasks["join"].String() + `', 7, '` + runs[2].ID.String() + `', 'running')`,
	} {
		if _, err := b.pool.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	// an attempt's result for an attempt that never started: not a legal
	// transition (the projector applies what the log says)
	bad := runs[3].Task("left", domain.TaskRunCompleted{Attempt: 5})
	catchUp(t, p)

	report, err := Verify(ctx, b.pool, b.store, ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if report.Clean || report.ViolationCount != 1 || len(report.Violations) != 1 {
		t.Fatalf("report:\n%s", report.String())
	}
	flows := tableDiff(report, "flow_runs")
	if flows.Different != 1 || flows.Missing+flows.Extra != 0 || len(flows.Samples) != 1 ||
		flows.Samples[0].Key != runs[0].ID.String() || !slices.Equal(flows.Samples[0].Columns, []string{"name", "run_count"}) {
		t.Errorf("flow_runs: %+v", flows)
	}
	if h := tableDiff(report, "state_history"); h.Extra != 1 || h.Missing+h.Different != 0 || h.Samples[0].Key != runs[1].ID.String()+"/2" {
		t.Errorf("state_history: %+v", h)
	}
	if a := tableDiff(report, "task_run_attempts"); a.Missing != 1 || a.Samples[0].Kind != "missing" || a.Samples[0].Key != runs[2].Tasks["join"].String()+"/7" {
		t.Errorf("task_run_attempts: %+v", a)
	}
	if tr := tableDiff(report, "task_runs"); tr.Missing+tr.Extra+tr.Different != 0 || tr.LiveRows != 20 || tr.Rebuilt != 20 {
		t.Errorf("task_runs: %+v", tr)
	}
	var name string
	_ = b.pool.QueryRow(ctx, `SELECT name FROM flow_runs WHERE id = $1`, runs[0].ID).Scan(&name)
	if name != "edited" {
		t.Fatal("a dry run changed the live tables")
	}

	res, err := Replay(ctx, b.pool, b.store, ReplayOptions{})
	if err != nil || !res.Swapped || res.Events != int64(bad[0].Position) {
		t.Fatalf("replay: %+v %v", res, err)
	}
	report, err = Verify(ctx, b.pool, b.store, ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if report.differences() != 0 || report.ViolationCount != 1 {
		t.Fatalf("after the replay:\n%s", report.String())
	}
}

// TestReplayWhileAppending replays while runs are written and the projector
// runs, then checks that what the projector applies on top of the swapped
// tables equals a rebuild.
func TestReplayWhileAppending(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 40 {
		b.log.CreateRun(projtest.RunSpec{}).Complete()
	}
	p := newProjector(t, b, ProjectorOptions{PollInterval: 10 * time.Millisecond})
	var wg sync.WaitGroup
	wg.Go(func() { _ = p.Run(ctx) })
	writer := projtest.NewLog(t, b.store)
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			r := writer.CreateRun(projtest.RunSpec{})
			r.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
			r.Succeed("load", 1, "x")
		}
	})
	for range 2 {
		res, err := Replay(ctx, b.pool, b.store, ReplayOptions{Verify: true})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Swapped || !res.Verify.Clean {
			t.Fatalf("replay while appending:\n%s", res.Verify.String())
		}
	}
	close(stop)
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := p.Sync(wctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	wg.Wait()
	report, err := Verify(context.Background(), b.pool, b.store, ReplayOptions{})
	if err != nil || !report.Clean {
		t.Fatalf("the projector after the swap differs from a rebuild: %v\n%s", err, report.String())
	}
}

func TestReplayOneAtATime(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, replayLockKey); err != nil {
		t.Fatal(err)
	}
	_, err = Replay(ctx, b.pool, b.store, ReplayOptions{})
	if domain.ErrorCode(err) != domain.CodeConflict {
		t.Fatalf("a second replay: %v", err)
	}
	_, _ = conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, replayLockKey)
	// an empty log replays to empty tables
	res, err := Replay(ctx, b.pool, b.store, ReplayOptions{Verify: true})
	if err != nil || !res.Swapped || res.Events != 0 || !res.Verify.Clean {
		t.Fatalf("empty log: %+v %v", res, err)
	}
}

// TestReplayWaitsForBusyTables holds a reader's lock on a live table past
// the swap's lock timeout: the swap gives up, tries again, and succeeds
// once the reader is done.
func TestReplayWaitsForBusyTables(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.log.CreateRun(projtest.RunSpec{}).Complete()
	catchUp(t, newProjector(t, b, ProjectorOptions{}))
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT count(*) FROM flow_runs`); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(700 * time.Millisecond)
		_ = tx.Rollback(ctx)
	}()
	start := time.Now()
	res, err := Replay(ctx, b.pool, b.store, ReplayOptions{LockTimeout: 200 * time.Millisecond, Verify: true})
	if err != nil || !res.Swapped || !res.Verify.Clean {
		t.Fatalf("replay: %+v %v", res, err)
	}
	if time.Since(start) < 600*time.Millisecond {
		t.Fatalf("the swap did not wait for the reader (%s)", time.Since(start))
	}
}

// TestReplayOnASmallPool replays on a pool as small as the one `ordo
// replay` opens on a two-core machine (4 connections): the phases that
// work on several tables at once must not each hold a connection while
// waiting for another.
func TestReplayOnASmallPool(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.pool.Config()
	cfg.MaxConns = 4
	small, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	res, err := Replay(ctx, small, eventstore.New(small, domain.NewRegistry()), ReplayOptions{Verify: true})
	if err != nil || !res.Swapped || !res.Verify.Clean {
		t.Fatalf("replay on a pool of 4 connections: %+v %v", res, err)
	}
}

// TestCreationDecodesAsJSONDoes checks the replay's decoder of the two
// creation events against the registry's JSON decoding, on payloads as
// jsonb prints them and on shapes its shortcuts must leave to JSON.
func TestCreationDecodesAsJSONDoes(t *testing.T) {
	reg := domain.NewRegistry()
	flowRun := uuid.MustParse("0190a6b2-7c1e-7d4e-9a3b-5f2c1d0e9f8a")
	cases := []struct {
		name, typ, stream, data string
		viaCreation             bool
	}{
		{"task run as jsonb prints it", "TaskRunCreated", domain.StreamTaskRun,
			`{"task": {"name": "train", "command": ["python", "train.py"], "retries": 2}, "flow_run_id": "` + flowRun.String() + `"}`, true},
		{"task run with an upper-case id", "TaskRunCreated", domain.StreamTaskRun,
			`{"task": {"name": "train"}, "flow_run_id": "` + strings.ToUpper(flowRun.String()) + `"}`, true},
		{"task run with a field after the id", "TaskRunCreated", domain.StreamTaskRun,
			`{"task": {"name": "train"}, "flow_run_id": "` + flowRun.String() + `", "zz": 1}`, true},
		{"task run without its task first", "TaskRunCreated", domain.StreamTaskRun,
			`{"flow_run_id": "` + flowRun.String() + `", "task": {"name": "train"}}`, false},
		{"flow run as jsonb prints it", "FlowRunCreated", domain.StreamFlowRun,
			`{"flow": {"name": "f", "tasks": [{"name": "a"}]}, "name": "r", "tags": ["x"], "work_queue": "default", "parameters": {"n": 1}, "scheduled_at": "2026-11-29T00:00:00Z", "task_run_ids": {"a": "` + flowRun.String() + `"}, "deployment_id": "` + flowRun.String() + `", "deployment_name": "d", "deployment_version": 3}`, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := domain.Envelope{Type: c.typ, StreamType: c.stream, Data: []byte(c.data)}
			if err := reg.DecodeEnvelope(&want); err != nil {
				t.Fatal(err)
			}
			got := domain.Envelope{Type: c.typ, StreamType: c.stream, Data: []byte(c.data)}
			if ok := newDecoder(reg).creation(&got); ok != c.viaCreation {
				t.Fatalf("creation took it: %v, want %v", ok, c.viaCreation)
			}
			if !c.viaCreation {
				return
			}
			if !reflect.DeepEqual(got.Event, want.Event) {
				t.Errorf("decoded\n%#v\nwant\n%#v", got.Event, want.Event)
			}
		})
	}
}

// TestReplayKeepsTableSettings checks that the rebuilt tables get the live
// ones' storage parameters, and not the autovacuum switch a replay turns
// off while it writes them.
func TestReplayKeepsTableSettings(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.log.CreateRun(projtest.RunSpec{}).Complete()
	if _, err := b.pool.Exec(ctx, `ALTER TABLE state_history SET (autovacuum_vacuum_scale_factor = 0.05, fillfactor = 90)`); err != nil {
		t.Fatal(err)
	}
	res, err := Replay(ctx, b.pool, b.store, ReplayOptions{})
	if err != nil || !res.Swapped {
		t.Fatalf("replay: %+v %v", res, err)
	}
	settings := func(table string) []string {
		var opts []string
		if err := b.pool.QueryRow(ctx, `SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = ('public.' || $1)::regclass`, table).Scan(&opts); err != nil {
			t.Fatal(err)
		}
		slices.Sort(opts)
		return opts
	}
	if got, want := settings("state_history"), []string{"autovacuum_vacuum_scale_factor=0.05", "fillfactor=90"}; !slices.Equal(got, want) {
		t.Errorf("state_history's settings after a replay: %v, want %v", got, want)
	}
	if got := settings("task_runs"); len(got) != 0 {
		t.Errorf("task_runs' settings after a replay: %v, want none", got)
	}
}
