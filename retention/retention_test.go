package retention_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/projections"
	"github.com/ordoflow/ordo/projections/projtest"
	"github.com/ordoflow/ordo/retention"
)

type bundle struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
	proj  *projections.Projector
	log   *projtest.Log
}

func setup(t *testing.T) bundle {
	t.Helper()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, domain.NewRegistry())
	proj, err := projections.NewProjector(store, projections.ProjectorOptions{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- proj.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("the projector stopped: %v", err)
		}
		store.Close()
	})
	return bundle{pool: pool, store: store, proj: proj, log: projtest.NewLog(t, store)}
}

func (b bundle) sync(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.proj.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

func (b bundle) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// streamsOf lists a run's streams: its own and its task runs'.
func streamsOf(r *projtest.Run) []uuid.UUID {
	ids := []uuid.UUID{r.ID}
	for _, id := range r.Tasks {
		ids = append(ids, id)
	}
	return ids
}

// subRun writes a sub-flow run of parent, with one task, finished or
// still running.
func subRun(b bundle, parent *projtest.Run, finished bool) []uuid.UUID {
	id, task := uuid.New(), uuid.New()
	parentTask := parent.Tasks["load"]
	flow := domain.FlowSpec{Name: "child", Tasks: []domain.TaskSpec{{Name: "only", Command: []string{"true"}}}}
	meta := domain.Metadata{Actor: "test"}
	events := []projtest.Event{
		{Stream: id, Meta: meta, Event: domain.FlowRunCreated{Name: "child-" + id.String()[:6], DeploymentID: uuid.New(), DeploymentName: "child", DeploymentVersion: 1,
			WorkQueue: "default", Flow: flow, TaskRunIDs: map[string]uuid.UUID{"only": task}, ScheduledAt: time.Now().UTC().Truncate(time.Microsecond),
			ParentFlowRunID: &parent.ID, ParentTaskRunID: &parentTask}},
		{Stream: task, Meta: meta, Event: domain.TaskRunCreated{FlowRunID: id, Task: flow.Tasks[0]}},
		{Stream: id, Meta: meta, Event: domain.FlowRunPending{}},
		{Stream: id, Meta: meta, Event: domain.FlowRunStarted{}},
		{Stream: task, Meta: meta, Event: domain.TaskRunStarted{Attempt: 1, Worker: "w1"}},
	}
	if finished {
		events = append(events,
			projtest.Event{Stream: task, Meta: meta, Event: domain.TaskRunCompleted{Attempt: 1}},
			projtest.Event{Stream: id, Meta: meta, Event: domain.FlowRunCompleted{}})
	}
	b.log.Append(events...)
	return []uuid.UUID{id, task}
}

func failRun(r *projtest.Run) {
	r.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
	r.Task("load", domain.TaskRunStarted{Attempt: 1, Worker: "w1"},
		domain.TaskRunFailed{AttemptFailure: domain.AttemptFailure{Attempt: 1, Error: "boom"}})
	for _, n := range []string{"left", "right", "join"} {
		r.Task(n, domain.TaskRunCancelled{NotRun: true})
	}
	r.Flow(domain.FlowRunFailed{Message: "task load failed"})
}

func writeLogs(t *testing.T, b bundle, r *projtest.Run, n int) {
	t.Helper()
	for i := range n {
		if _, err := b.pool.Exec(context.Background(), `INSERT INTO task_run_logs (task_run_id, flow_run_id, attempt, ts, stream, line) VALUES ($1, $2, 1, now(), 'stdout', $3)`,
			r.Tasks["load"], r.ID, "line "+string(rune('a'+i))); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPruneArchivesFinishedRuns is the whole story: finished runs (with
// sub-flows) are archived to files and leave the log and the read models
// together, unfinished and recent ones stay, logs and River jobs go, the
// archival is an event, the read models equal a replay, the projector
// goes on, and the log stays closed to every other change.
func TestPruneArchivesFinishedRuns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	completed := b.log.CreateRun(projtest.RunSpec{Name: "old-completed"})
	completed.Complete()
	failed := b.log.CreateRun(projtest.RunSpec{Name: "old-failed"})
	failRun(failed)
	running := b.log.CreateRun(projtest.RunSpec{Name: "old-running"})
	running.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
	parent := b.log.CreateRun(projtest.RunSpec{Name: "old-parent"})
	child := subRun(b, parent, true)
	parent.Complete()
	busyParent := b.log.CreateRun(projtest.RunSpec{Name: "old-parent-of-running"})
	busyChild := subRun(b, busyParent, false)
	busyParent.Complete()
	writeLogs(t, b, completed, 3)
	writeLogs(t, b, running, 2)
	for _, j := range []struct{ state, finalized string }{
		{"completed", "now() - interval '1 day'"}, {"discarded", "now() - interval '1 day'"}, {"cancelled", "now() - interval '1 day'"},
		{"completed", "now() + interval '1 day'"}, {"running", "NULL"},
	} {
		if _, err := b.pool.Exec(ctx, `INSERT INTO river_job (args, kind, max_attempts, queue, state, attempt, attempted_at, finalized_at) VALUES ('{}', 'ordo.task_run', 3, 'default', $1, 1, now(), `+j.finalized+`)`, j.state); err != nil {
			t.Fatal(err)
		}
	}
	b.sync(t)
	time.Sleep(20 * time.Millisecond)
	cutoff := time.Now()
	time.Sleep(20 * time.Millisecond)
	recent := b.log.CreateRun(projtest.RunSpec{Name: "recent-completed"})
	recent.Complete()
	b.sync(t)

	archivedStreams := slices.Concat(streamsOf(completed), streamsOf(failed), streamsOf(parent), child)
	keptStreams := slices.Concat(streamsOf(running), streamsOf(busyParent), busyChild, streamsOf(recent))
	archivedRuns := []uuid.UUID{completed.ID, failed.ID, parent.ID, child[0]}
	before := map[int64]string{} // position -> data, of the events to archive
	rows, err := b.pool.Query(ctx, `SELECT position, data::text FROM events WHERE stream_id = ANY($1)`, archivedStreams)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var p int64
		var d string
		if err := rows.Scan(&p, &d); err != nil {
			t.Fatal(err)
		}
		before[p] = d
	}
	rows.Close()
	keptEvents := b.count(t, `SELECT count(*) FROM events WHERE stream_id = ANY($1)`, keptStreams)

	// a dry run counts and changes nothing
	dir := t.TempDir()
	total := b.count(t, `SELECT count(*) FROM events`)
	dry, err := retention.Prune(ctx, b.pool, b.store, retention.Options{Before: cutoff, ArchiveDir: dir, DryRun: true, BatchRuns: 2})
	if err != nil {
		t.Fatal(err)
	}
	if dry.Runs != 4 || dry.Events != len(before) || dry.LogLines != 3 || dry.RiverJobs != 3 || len(dry.Files) != 0 || dry.Skipped != 2 {
		t.Fatalf("dry run: %+v; want 4 runs, %d events, 3 log lines, 3 jobs, 2 skipped", dry, len(before))
	}
	if n := b.count(t, `SELECT count(*) FROM events`); n != total {
		t.Fatalf("a dry run changed the log: %d events, was %d", n, total)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a dry run wrote %d files", len(entries))
	}

	res, err := retention.Prune(ctx, b.pool, b.store, retention.Options{Before: cutoff, ArchiveDir: dir, BatchRuns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("prune: %+v", res)
	if res.Runs != 4 || res.Events != len(before) || res.LogLines != 3 || res.RiverJobs != 3 || res.Skipped != 2 || len(res.Files) < 2 {
		t.Fatalf("prune: %+v; want 4 runs in at least 2 files, %d events, 3 log lines, 3 jobs, 2 runs skipped", res, len(before))
	}

	// the archives hold exactly the events removed, byte for byte
	got := map[int64]string{}
	for _, f := range res.Files {
		events, err := retention.ReadArchive(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			got[e.Position] = string(e.Data)
			if !slices.Contains(archivedStreams, e.StreamID) {
				t.Errorf("archive %s holds an event of stream %s, which was not to be archived", f, e.StreamID)
			}
		}
	}
	if len(got) != len(before) {
		t.Fatalf("the archives hold %d events, the log had %d", len(got), len(before))
	}
	for p, d := range before {
		var a, b2 any
		_ = json.Unmarshal([]byte(d), &a)
		_ = json.Unmarshal([]byte(got[p]), &b2)
		if ja, _ := json.Marshal(a); string(ja) != string(mustMarshal(b2)) {
			t.Errorf("event %d: archived %s, was %s", p, got[p], d)
		}
	}

	// gone from the log and the read models; the rest untouched
	if n := b.count(t, `SELECT count(*) FROM events WHERE stream_id = ANY($1)`, archivedStreams); n != 0 {
		t.Errorf("%d archived events are still in the log", n)
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE stream_id = ANY($1)`, keptStreams); n != keptEvents {
		t.Errorf("kept streams hold %d events, had %d", n, keptEvents)
	}
	for _, q := range []string{
		`SELECT count(*) FROM flow_runs WHERE id = ANY($1)`,
		`SELECT count(*) FROM task_runs WHERE flow_run_id = ANY($1)`,
		`SELECT count(*) FROM state_history WHERE flow_run_id = ANY($1)`,
		`SELECT count(*) FROM task_run_attempts WHERE flow_run_id = ANY($1)`,
		`SELECT count(*) FROM task_run_logs WHERE flow_run_id = ANY($1)`,
	} {
		if n := b.count(t, q, archivedRuns); n != 0 {
			t.Errorf("%s: %d rows of archived runs left", q, n)
		}
	}
	if n := b.count(t, `SELECT count(*) FROM flow_runs WHERE id = ANY($1)`, []uuid.UUID{running.ID, busyParent.ID, busyChild[0], recent.ID}); n != 4 {
		t.Errorf("%d of the 4 kept runs are in flow_runs", n)
	}
	if n := b.count(t, `SELECT count(*) FROM task_run_logs WHERE flow_run_id = $1`, running.ID); n != 2 {
		t.Errorf("the running run's log lines: %d, want 2", n)
	}
	if n := b.count(t, `SELECT count(*) FROM river_job`); n != 2 {
		t.Errorf("%d River jobs left, want the running one and the recent one", n)
	}

	// the archival is recorded, one event per file, with the file's hash
	recs, err := b.store.ReadStream(ctx, b.pool, domain.RetentionStreamID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(res.Files) {
		t.Fatalf("%d EventsArchived events for %d files", len(recs), len(res.Files))
	}
	var recorded []uuid.UUID
	count := 0
	for i, env := range recs {
		e := env.Event.(domain.EventsArchived)
		raw, err := os.ReadFile(e.File)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(raw)
		if e.File != res.Files[i] || e.SHA256 != hex.EncodeToString(sum[:]) || env.Metadata.Actor != "prune" || !e.Before.Equal(cutoff.UTC()) {
			t.Errorf("record %d: %+v %+v", i, e, env.Metadata)
		}
		recorded = append(recorded, e.FlowRunIDs...)
		count += e.Count
	}
	sortIDs(recorded)
	sortIDs(archivedRuns)
	if !slices.Equal(recorded, archivedRuns) || count != len(before) {
		t.Errorf("recorded runs %v (%d events), archived %v (%d)", recorded, count, archivedRuns, len(before))
	}

	// the projector goes on, the read models equal a replay, every event
	// left is a legal transition
	running.Succeed("load", 1, 1)
	b.sync(t)
	report, err := projections.Verify(ctx, b.pool, b.store, projections.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !report.OK() {
		t.Fatalf("after prune, a replay differs:\n%s", report.String())
	}

	// a stream that was archived cannot be continued
	_, err = b.store.AppendAlone(ctx, eventstore.Append{StreamID: failed.ID, ExpectedVersion: 7, Events: []domain.Event{domain.FlowRunRetried{}}})
	if !errors.Is(err, eventstore.ErrConflict) {
		t.Errorf("appending to an archived stream: %v, want a conflict", err)
	}

	// a second prune finds nothing more
	again, err := retention.Prune(ctx, b.pool, b.store, retention.Options{Before: cutoff, ArchiveDir: dir})
	if err != nil || again.Runs != 0 || len(again.Files) != 0 || again.LogLines != 0 || again.RiverJobs != 0 {
		t.Fatalf("second prune: %+v %v", again, err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if filepath.Ext(e.Name()) == ".tmp" {
			t.Errorf("a temporary file is left: %s", e.Name())
		}
	}
}

func mustMarshal(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func sortIDs(ids []uuid.UUID) {
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
}

// TestPruneLeavesARunThatChanges: an event appended to a run while it is
// being archived (here a stale result refused, committed while prune waits
// for the events table) makes prune leave that batch in the log and delete
// its file; the next prune archives the run with the new event.
func TestPruneLeavesARunThatChanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	run := b.log.CreateRun(projtest.RunSpec{Name: "changes"})
	run.Complete()
	b.sync(t)
	cutoff := time.Now().Add(10 * time.Millisecond)
	time.Sleep(20 * time.Millisecond)

	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Append(ctx, tx, eventstore.Append{StreamID: run.Tasks["join"], ExpectedVersion: 3,
		Events: []domain.Event{domain.TaskRunResultRefused{Attempt: 1, CurrentAttempt: 1, Outcome: "completed"}}}); err != nil {
		t.Fatal(err)
	}
	go func() {
		// Commit once prune has read the streams and waits for the lock
		// of the events table, which this open append holds.
		for {
			var waiting bool
			if err := b.pool.QueryRow(ctx, `
SELECT EXISTS (SELECT FROM pg_locks WHERE NOT granted AND relation = 'events'::regclass
	AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))`).Scan(&waiting); err != nil || waiting {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		_ = tx.Commit(ctx)
		b.store.Committed()
	}()
	dir := t.TempDir()
	res, err := retention.Prune(ctx, b.pool, b.store, retention.Options{Before: cutoff, ArchiveDir: dir, LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Runs != 0 || res.Skipped != 1 || len(res.Files) != 0 {
		t.Fatalf("prune during an append: %+v, want the run skipped", res)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the archive of the batch left in the log was kept: %v", entries)
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE stream_id = $1`, run.Tasks["join"]); n != 4 {
		t.Fatalf("the task run's stream has %d events, want 4", n)
	}
	b.sync(t)
	res, err = retention.Prune(ctx, b.pool, b.store, retention.Options{Before: cutoff, ArchiveDir: dir})
	if err != nil || res.Runs != 1 {
		t.Fatalf("second prune: %+v %v", res, err)
	}
	report, err := projections.Verify(ctx, b.pool, b.store, projections.ReplayOptions{})
	if err != nil || !report.OK() {
		t.Fatalf("after prune: %v\n%s", err, report.String())
	}
}

// TestEventsStayImmutable: with retention's trigger, UPDATE, TRUNCATE and
// DELETE are still refused, whatever session setting is made, unless the
// transaction sets ordo.pruning to its own id, and then only DELETE.
func TestEventsStayImmutable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	run := b.log.CreateRun(projtest.RunSpec{})
	run.Complete()
	refused := func(what string, stmts ...string) {
		t.Helper()
		err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
			for _, s := range stmts {
				if _, err := tx.Exec(ctx, s); err != nil {
					return err
				}
			}
			return nil
		})
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("%s: %v, want insufficient_privilege", what, err)
		}
	}
	refused("DELETE", `DELETE FROM events`)
	refused("UPDATE", `UPDATE events SET type = 'x'`)
	refused("TRUNCATE", `TRUNCATE events`)
	refused("DELETE with a session setting", `SET ordo.pruning = 'on'`, `DELETE FROM events`)
	refused("DELETE with another transaction's id", `SELECT set_config('ordo.pruning', (pg_current_xact_id()::text::bigint - 1)::text, true)`, `DELETE FROM events`)
	refused("UPDATE while pruning", `SELECT set_config('ordo.pruning', pg_current_xact_id()::text, true)`, `UPDATE events SET type = 'x'`)
	refused("TRUNCATE while pruning", `SELECT set_config('ordo.pruning', pg_current_xact_id()::text, true)`, `TRUNCATE events`)
	n := b.count(t, `SELECT count(*) FROM events`)
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('ordo.pruning', pg_current_xact_id()::text, true)`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM events WHERE stream_id = $1`, run.Tasks["join"])
		if err != nil {
			return err
		}
		return errors.New("roll back")
	})
	if err == nil || err.Error() != "roll back" {
		t.Fatalf("DELETE while pruning: %v", err)
	}
	if m := b.count(t, `SELECT count(*) FROM events`); m != n {
		t.Fatalf("the rolled-back delete changed the log: %d, was %d", m, n)
	}
}

// TestVerifyAfterPruneWhileATransactionIsOpen: right after a prune, while
// an older transaction is still open anywhere on the server, the record of
// the archival is not readable yet, and the read models' checkpoint names
// an event that is gone. A replay then must still compare clean.
func TestVerifyAfterPruneWhileATransactionIsOpen(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	kept := b.log.CreateRun(projtest.RunSpec{Name: "kept"})
	kept.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
	run := b.log.CreateRun(projtest.RunSpec{Name: "archived"})
	run.Complete() // the last event the projector applies
	b.sync(t)
	cutoff := time.Now().Add(10 * time.Millisecond)
	time.Sleep(20 * time.Millisecond)

	old, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Rollback(ctx)                                                 //nolint:errcheck
	if _, err := old.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil { // holds back the readable log
		t.Fatal(err)
	}
	res, err := retention.Prune(ctx, b.pool, b.store, retention.Options{Before: cutoff, ArchiveDir: t.TempDir()})
	if err != nil || res.Runs != 1 {
		t.Fatalf("prune: %+v %v", res, err)
	}
	var readable int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE stream_id = $1 AND transaction_id < (SELECT events_stable_xmin())`, domain.RetentionStreamID).Scan(&readable); err != nil || readable != 0 {
		t.Fatalf("the record of the archival is readable already (%d, %v): the test does not test the case", readable, err)
	}
	report, err := projections.Verify(ctx, b.pool, b.store, projections.ReplayOptions{})
	if err != nil || !report.OK() {
		t.Fatalf("replay while the record is not readable: %v\n%s", err, report.String())
	}
	if err := old.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	b.sync(t)
	report, err = projections.Verify(ctx, b.pool, b.store, projections.ReplayOptions{})
	if err != nil || !report.OK() {
		t.Fatalf("replay afterwards: %v\n%s", err, report.String())
	}
}
