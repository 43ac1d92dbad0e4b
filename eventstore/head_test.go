package eventstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

func TestHeadCheckpointsAndFilteredReads(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if _, ok, err := b.store.Head(ctx, b.pool); ok || err != nil {
		t.Fatalf("empty log: head %t, %v", ok, err)
	}
	run, task := uuid.New(), uuid.New()
	first, err := appendTx(t, b, eventstore.Append{StreamID: run, Events: []domain.Event{domain.FlowRunLate{}, domain.FlowRunPending{}}})
	if err != nil {
		t.Fatal(err)
	}
	// one transaction writes to the run and to a task run
	second, err := appendTx(t, b,
		eventstore.Append{StreamID: run, ExpectedVersion: 2, Events: []domain.Event{domain.FlowRunStarted{}}},
		eventstore.Append{StreamID: task, Events: []domain.Event{domain.TaskRunReset{}, domain.TaskRunCancelled{}}})
	if err != nil {
		t.Fatal(err)
	}
	last := eventstore.CheckpointOf(second[len(second)-1])

	head, ok, err := b.store.Head(ctx, b.pool)
	if err != nil || !ok || head != last {
		t.Fatalf("head %v %t %v, want %v", head, ok, err, last)
	}
	cp, err := b.store.CheckpointAt(ctx, b.pool, first[1].Position)
	if err != nil || cp != eventstore.CheckpointOf(first[1]) {
		t.Fatalf("checkpoint at %d: %v %v", first[1].Position, cp, err)
	}
	if _, err := b.store.CheckpointAt(ctx, b.pool, last.Position+100); domain.ErrorCode(err) != domain.CodeNotFound {
		t.Fatalf("checkpoint at a position with no event: %v", err)
	}
	// the run's last write is the second transaction: its last event, which
	// is the task run's
	if cp, ok, err := b.store.StreamCheckpoint(ctx, b.pool, run); err != nil || !ok || cp != last {
		t.Fatalf("stream checkpoint of the run: %v %t %v, want %v", cp, ok, err, last)
	}
	if _, ok, err := b.store.StreamCheckpoint(ctx, b.pool, uuid.New()); ok || err != nil {
		t.Fatalf("stream checkpoint of no stream: %t %v", ok, err)
	}
	lasts, err := b.store.LastEvents(ctx, b.pool, []uuid.UUID{run, task, uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	want := map[uuid.UUID]string{run: domain.FlowRunStarted{}.EventType(), task: domain.TaskRunCancelled{}.EventType()}
	if len(lasts) != len(want) || lasts[run].Type != want[run] || lasts[task].Type != want[task] ||
		!lasts[task].RecordedAt.Equal(second[len(second)-1].RecordedAt) {
		t.Fatalf("last events %+v, want types %v and the task run's time %v", lasts, want, second[len(second)-1].RecordedAt)
	}
	if !eventstore.CheckpointOf(first[0]).Less(last) || last.Less(eventstore.CheckpointOf(first[0])) {
		t.Fatal("Less does not follow log order")
	}

	var got []domain.Envelope
	for range 500 { // other tests' open transactions hold the gap-free reader back for a moment
		time.Sleep(10 * time.Millisecond)
		if got, err = b.store.ReadAllFiltered(ctx, b.pool, eventstore.Checkpoint{}, eventstore.ReadFilter{Types: []string{"FlowRunStarted", "TaskRunCancelled"}}, 10); err != nil || len(got) == 2 {
			break
		}
	}
	if err != nil || len(got) != 2 || got[0].Type != "FlowRunStarted" || got[1].Type != "TaskRunCancelled" || got[1].Event != nil || len(got[1].Data) == 0 {
		t.Fatalf("filtered read: %v %+v", err, got)
	}
	all := readUntil(t, 4, func() ([]domain.Envelope, error) {
		return b.store.ReadAllFiltered(ctx, b.pool, eventstore.CheckpointOf(first[0]), eventstore.ReadFilter{}, 10)
	})
	if len(all) != 4 {
		t.Fatalf("unfiltered read after the first event: %d events", len(all))
	}
}

func TestReadsAndRemovalsOthersAskOfTheLog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if _, ok, err := b.store.StableHead(ctx, b.pool); ok || err != nil {
		t.Fatalf("empty log: stable head %t, %v", ok, err)
	}
	if n, err := b.store.PositionSpan(ctx, b.pool); n != 0 || err != nil {
		t.Fatalf("empty log: span %d, %v", n, err)
	}
	run, task := uuid.New(), uuid.New()
	envs, err := appendTx(t, b,
		eventstore.Append{StreamID: run, Events: []domain.Event{domain.FlowRunLate{}, domain.FlowRunPending{}}},
		eventstore.Append{StreamID: task, Events: []domain.Event{domain.TaskRunCreated{FlowRunID: run}}})
	if err != nil {
		t.Fatal(err)
	}
	last := eventstore.CheckpointOf(envs[len(envs)-1])

	var head eventstore.Checkpoint
	for range 500 { // other tests' open transactions hold the stable head back for a moment
		var ok bool
		if head, ok, err = b.store.StableHead(ctx, b.pool); err != nil || ok && head == last {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || head != last {
		t.Fatalf("stable head %v %v, want %v", head, err, last)
	}
	// LogRows reads up to the stable head again, which another test's
	// transaction may hold back for a moment, as above
	var types []string
	for range 500 {
		rows, err := b.store.LogRows(ctx, b.pool)
		if err != nil {
			t.Fatal(err)
		}
		types = types[:0]
		for rows.Next() {
			types = append(types, string(rows.RawValues()[5]))
		}
		rows.Close()
		if err = rows.Err(); err != nil {
			t.Fatal(err)
		}
		if len(types) == 3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(types) != 3 || types[2] != "TaskRunCreated" {
		t.Fatalf("log rows: %v", types)
	}
	if n, err := b.store.PositionSpan(ctx, b.pool); n < 3 || err != nil {
		t.Fatalf("span %d, %v; want at least 3", n, err)
	}

	owners, err := b.store.TaskRunFlowRuns(ctx, b.pool, []uuid.UUID{task, run, uuid.New()})
	if err != nil || len(owners) != 1 || owners[task] != run {
		t.Fatalf("flow runs of task runs: %v %v, want %s: %s", owners, err, task, run)
	}
	sizes, err := b.store.StreamSizes(ctx, b.pool, []uuid.UUID{run, task, uuid.New()})
	want := map[uuid.UUID]eventstore.StreamSize{run: {Version: 2, Count: 2}, task: {Version: 1, Count: 1}}
	if err != nil || len(sizes) != 2 || sizes[run] != want[run] || sizes[task] != want[task] {
		t.Fatalf("stream sizes %v %v, want %v", sizes, err, want)
	}

	err = b.store.InTx(ctx, func(tx pgx.Tx) error {
		if err := b.store.LockAppends(ctx, tx); err != nil {
			return err
		}
		n, err := b.store.DeleteStreams(ctx, tx, []uuid.UUID{run})
		if err == nil && n != 2 {
			t.Errorf("deleted %d events, want 2", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[uuid.UUID]int64{run: 0, task: 1} {
		if v, err := b.store.StreamVersion(ctx, b.pool, id); v != want || err != nil {
			t.Fatalf("version of %s after the removal: %d %v, want %d", id, v, err, want)
		}
	}
}
