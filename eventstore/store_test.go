package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
)

type testBundle struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
}

func setup(t *testing.T) testBundle {
	t.Helper()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, domain.NewRegistry())
	t.Cleanup(store.Close)
	return testBundle{pool: pool, store: store}
}

func appendTx(t *testing.T, b testBundle, appends ...eventstore.Append) ([]domain.Envelope, error) {
	t.Helper()
	var envs []domain.Envelope
	err := b.store.InTx(context.Background(), func(tx pgx.Tx) error {
		var err error
		envs, err = b.store.Append(context.Background(), tx, appends...)
		return err
	})
	return envs, err
}

func TestAppendAndReadStream(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	id := uuid.New()
	meta := domain.Metadata{Actor: "token:alice", Reason: "test", CorrelationID: "c1"}

	envs, err := appendTx(t, b, eventstore.Append{StreamID: id, Events: []domain.Event{
		domain.FlowRunLate{}, domain.FlowRunPending{}, domain.FlowRunFailed{Message: "boom"},
	}, Metadata: meta})
	if err != nil {
		t.Fatal(err)
	}
	if len(envs) != 3 || envs[0].Position == 0 || envs[2].Position <= envs[0].Position || envs[0].TransactionID == 0 {
		t.Fatalf("stored envelopes lack positions: %+v", envs)
	}
	got, err := b.store.ReadStream(ctx, b.pool, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("read %d events, want 3", len(got))
	}
	for i, e := range got {
		if e.Version != int64(i+1) || e.StreamType != domain.StreamFlowRun || e.Metadata != meta {
			t.Errorf("event %d: version %d type %s meta %+v", i, e.Version, e.StreamType, e.Metadata)
		}
	}
	if f, ok := got[2].Event.(domain.FlowRunFailed); !ok || f.Message != "boom" {
		t.Errorf("third event decoded as %#v", got[2].Event)
	}
	after, err := b.store.ReadStream(ctx, b.pool, id, 2)
	if err != nil || len(after) != 1 || after[0].Version != 3 {
		t.Fatalf("read after version 2: %v %+v", err, after)
	}
}

func TestAppendManyStreamsInOneStatement(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var appends []eventstore.Append
	for range 50 {
		appends = append(appends, eventstore.Append{StreamID: uuid.New(), Events: []domain.Event{domain.TaskRunReset{}, domain.TaskRunCancelled{}}})
	}
	envs, err := appendTx(t, b, appends...)
	if err != nil {
		t.Fatal(err)
	}
	if len(envs) != 100 {
		t.Fatalf("stored %d events, want 100", len(envs))
	}
	for i, e := range envs {
		if e.StreamID != appends[i/2].StreamID || e.Version != int64(i%2+1) || e.Position == 0 {
			t.Fatalf("envelope %d is %+v", i, e)
		}
	}
}

func TestOptimisticConcurrency(t *testing.T) {
	t.Parallel()

	t.Run("TwoWritersOneWins", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := context.Background()
		id := uuid.New()
		if _, err := appendTx(t, b, eventstore.Append{StreamID: id, Events: []domain.Event{domain.FlowRunLate{}}}); err != nil {
			t.Fatal(err)
		}
		// Both writers read version 1 and append at once; the second blocks on
		// the first's uncommitted row, then must lose.
		tx1, _ := b.pool.Begin(ctx)
		tx2, _ := b.pool.Begin(ctx)
		defer tx1.Rollback(ctx) //nolint:errcheck
		defer tx2.Rollback(ctx) //nolint:errcheck
		if _, err := b.store.Append(ctx, tx1, eventstore.Append{StreamID: id, ExpectedVersion: 1, Events: []domain.Event{domain.FlowRunPending{}}}); err != nil {
			t.Fatal(err)
		}
		second := make(chan error, 1)
		go func() {
			_, err := b.store.Append(ctx, tx2, eventstore.Append{StreamID: id, ExpectedVersion: 1, Events: []domain.Event{domain.FlowRunCancelled{}}})
			second <- err
		}()
		time.Sleep(50 * time.Millisecond) // let the second writer reach the row lock
		if err := tx1.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		err := <-second
		var conflict *eventstore.ConflictError
		if !errors.As(err, &conflict) || !errors.Is(err, eventstore.ErrConflict) {
			t.Fatalf("second writer: got %v, want a conflict", err)
		}
		got, _ := b.store.ReadStream(ctx, b.pool, id, 0)
		if len(got) != 2 || got[1].Type != "FlowRunPending" {
			t.Fatalf("stream holds %+v", got)
		}
	})

	t.Run("ManyWritersExactlyOneWinsEachVersion", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := uuid.New()
		var wins atomic.Int32
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				_, err := appendTx(t, b, eventstore.Append{StreamID: id, ExpectedVersion: 0, Events: []domain.Event{domain.FlowRunLate{}}})
				switch {
				case err == nil:
					wins.Add(1)
				case !errors.Is(err, eventstore.ErrConflict):
					t.Errorf("unexpected error: %v", err)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("%d writers won at version 0, want exactly 1", wins.Load())
		}
	})

	t.Run("BehindExpectedVersionWritesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id, other := uuid.New(), uuid.New()
		_, err := appendTx(t, b,
			eventstore.Append{StreamID: other, Events: []domain.Event{domain.FlowRunLate{}}},
			eventstore.Append{StreamID: id, ExpectedVersion: 5, Events: []domain.Event{domain.FlowRunLate{}}},
		)
		if !errors.Is(err, eventstore.ErrConflict) {
			t.Fatalf("got %v, want a conflict", err)
		}
		got, _ := b.store.ReadStream(context.Background(), b.pool, other, 0)
		if len(got) != 0 {
			t.Fatalf("the other stream of the batch was written: %+v", got)
		}
		// the single-event path checks the same
		if _, err := b.store.AppendAlone(context.Background(), eventstore.Append{StreamID: id, ExpectedVersion: 2, Events: []domain.Event{domain.FlowRunLate{}}}); !errors.Is(err, eventstore.ErrConflict) {
			t.Fatalf("single event behind: got %v, want a conflict", err)
		}
	})

	// The log's order is (transaction_id, position), and a transaction's id
	// is given at its first write, not at its commit. A transaction that
	// wrote something (a lock, a job) before a newer one appended version 2
	// must not append version 3: it would come before version 2 in the log,
	// and every reader of the log would find a gap. It loses the race and
	// is decided again, in a transaction that follows version 2.
	t.Run("AnOlderTransactionDoesNotFollowANewerOne", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := context.Background()
		id := uuid.New()
		if _, err := appendTx(t, b, eventstore.Append{StreamID: id, Events: []domain.Event{domain.FlowRunLate{}}}); err != nil {
			t.Fatal(err)
		}
		// the single-event statement, the batch, and Save (the commands' path)
		for _, n := range []int{1, 2, 3} {
			older, err := b.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := older.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil { // its id, as a first write gives it
				t.Fatal(err)
			}
			have := int64(len(readAll(t, b, id)))
			if _, err := appendTx(t, b, eventstore.Append{StreamID: id, ExpectedVersion: have, Events: []domain.Event{domain.FlowRunPending{}}}); err != nil {
				t.Fatal(err)
			}
			events := make([]domain.Event, n)
			for i := range events {
				events[i] = domain.FlowRunLate{}
			}
			next := eventstore.Append{StreamID: id, ExpectedVersion: have + 1, Events: events}
			if n == 3 {
				err = b.store.Save(ctx, older, next)
			} else {
				_, err = b.store.Append(ctx, older, next)
			}
			_ = older.Rollback(ctx)
			if !errors.Is(err, eventstore.ErrConflict) {
				t.Fatalf("%d events after a newer transaction's version %d: got %v, want a conflict", n, have+1, err)
			}
			if _, err := appendTx(t, b, next); err != nil {
				t.Fatalf("decided again in a new transaction: %v", err)
			}
		}
		var inOrder bool
		if err := b.pool.QueryRow(ctx, `
SELECT array_agg(version ORDER BY transaction_id, position) = array_agg(version ORDER BY version)
FROM events WHERE stream_id = $1`, id).Scan(&inOrder); err != nil || !inOrder {
			t.Fatalf("the stream's versions are not in log order (%v)", err)
		}
	})

	// Save, which returns no envelopes, stores what Append would and
	// refuses what Append would: a stream behind, and a stream ahead.
	t.Run("Save", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := context.Background()
		id, other := uuid.New(), uuid.New()
		save := func(appends ...eventstore.Append) error {
			return b.store.InTx(ctx, func(tx pgx.Tx) error { return b.store.Save(ctx, tx, appends...) })
		}
		meta := domain.Metadata{Actor: "worker:w", CorrelationID: "run"}
		if err := save(
			eventstore.Append{StreamID: id, Events: []domain.Event{domain.FlowRunLate{}, domain.FlowRunPending{}}, Metadata: meta},
			eventstore.Append{StreamID: other, Events: []domain.Event{domain.FlowRunLate{}}, Metadata: meta},
		); err != nil {
			t.Fatal(err)
		}
		for _, stale := range []int64{1, 3} {
			err := save(
				eventstore.Append{StreamID: other, ExpectedVersion: 1, Events: []domain.Event{domain.FlowRunPending{}}},
				eventstore.Append{StreamID: id, ExpectedVersion: stale, Events: []domain.Event{domain.FlowRunCancelled{}}},
			)
			if !errors.Is(err, eventstore.ErrConflict) {
				t.Errorf("saved at version %d of a stream at 2: got %v, want a conflict", stale, err)
			}
		}
		got, _ := b.store.ReadStreams(ctx, b.pool, []uuid.UUID{id, other})
		if len(got) != 3 || got[1].Type != "FlowRunPending" || got[1].Version != 2 || got[2].StreamID != other || got[2].Metadata != meta {
			t.Fatalf("streams hold %+v; want the first save's three events and nothing of the refused ones", got)
		}
	})
}

func TestEventsAreImmutable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if _, err := appendTx(t, b, eventstore.Append{StreamID: uuid.New(), Events: []domain.Event{domain.FlowRunLate{}}}); err != nil {
		t.Fatal(err)
	}
	// a plain connection, as from psql or pgadmin
	conn, err := pgx.ConnectConfig(ctx, b.pool.Config().ConnConfig.Copy())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, stmt := range []string{
		`UPDATE events SET type = 'Edited'`,
		`DELETE FROM events`,
		`TRUNCATE events`,
	} {
		_, err := conn.Exec(ctx, stmt)
		if err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: got %v, want a refusal", stmt, err)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM events WHERE type = 'FlowRunLate'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("events changed: %d rows, %v", n, err)
	}
}

// TestTailingReaderSeesEveryCommittedEventOnce is the gap-free reading
// hazard: appenders commit out of position order, and the reader must still
// see every committed event exactly once and no rolled-back one.
func TestTailingReaderSeesEveryCommittedEventOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	const writers, perWriter = 16, 40
	var (
		mu        sync.Mutex
		committed = map[int64]bool{}
		rolled    = map[uuid.UUID]bool{}
		seen      []domain.Envelope
		seenCh    = make(chan struct{}, 1)
	)
	subDone := make(chan error, 1)
	go func() {
		subDone <- b.store.Subscribe(ctx, eventstore.Checkpoint{}, eventstore.SubscribeOptions{BatchSize: 37, PollInterval: 20 * time.Millisecond},
			func(_ context.Context, envs []domain.Envelope) error {
				mu.Lock()
				seen = append(seen, envs...)
				mu.Unlock()
				select {
				case seenCh <- struct{}{}:
				default:
				}
				return nil
			})
	}()

	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range perWriter {
				id := uuid.New()
				tx, err := b.pool.Begin(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				n := 1 + rng.IntN(3)
				evs := make([]domain.Event, n)
				for i := range evs {
					evs[i] = domain.TaskRunReset{}
				}
				envs, err := b.store.Append(ctx, tx, eventstore.Append{StreamID: id, Events: evs})
				if err != nil {
					t.Error(err)
					tx.Rollback(ctx) //nolint:errcheck
					return
				}
				time.Sleep(time.Duration(rng.IntN(15)) * time.Millisecond)
				if rng.IntN(5) == 0 {
					tx.Rollback(ctx) //nolint:errcheck
					mu.Lock()
					rolled[id] = true
					mu.Unlock()
					continue
				}
				if err := tx.Commit(ctx); err != nil {
					t.Error(err)
					return
				}
				b.store.Committed()
				mu.Lock()
				for _, e := range envs {
					committed[e.Position] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	deadline := time.After(30 * time.Second)
	for {
		mu.Lock()
		done := len(seen) >= len(committed)
		mu.Unlock()
		if done {
			break
		}
		select {
		case <-seenCh:
		case <-deadline:
			mu.Lock()
			t.Fatalf("reader saw %d of %d committed events", len(seen), len(committed))
		}
	}
	cancel()
	<-subDone

	mu.Lock()
	defer mu.Unlock()
	if len(seen) != len(committed) {
		t.Fatalf("reader saw %d events, %d were committed", len(seen), len(committed))
	}
	once := map[int64]bool{}
	for _, e := range seen {
		if once[e.Position] {
			t.Fatalf("event %d seen twice", e.Position)
		}
		once[e.Position] = true
		if !committed[e.Position] || rolled[e.StreamID] {
			t.Fatalf("event %d was never committed", e.Position)
		}
	}
	// the order is stable: a fresh read of the log gives the same sequence.
	// A read stops at the stable head, which a transaction then running on
	// another database of the server (another test package) may hold back
	// for a moment: read again until the head has passed it.
	var again []domain.Envelope
	for end := time.Now().Add(10 * time.Second); ; {
		var err error
		again, err = b.store.ReadAll(context.Background(), b.pool, eventstore.Checkpoint{}, len(seen)+10)
		if err != nil {
			t.Fatal(err)
		}
		if len(again) >= len(seen) || time.Now().After(end) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(again) != len(seen) {
		t.Fatalf("re-read %d events, want %d", len(again), len(seen))
	}
	for i := range again {
		if again[i].Position != seen[i].Position {
			t.Fatalf("order differs at %d: %d then %d", i, seen[i].Position, again[i].Position)
		}
	}
	t.Logf("%d writers, %d committed events seen once each, %d transactions rolled back", writers, len(committed), len(rolled))
}

func TestReaderWaitsForOlderOpenTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	// an older transaction appends first and stays open
	old, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Rollback(ctx) //nolint:errcheck
	if _, err := b.store.Append(ctx, old, eventstore.Append{StreamID: uuid.New(), Events: []domain.Event{domain.FlowRunLate{}}}); err != nil {
		t.Fatal(err)
	}
	// a newer one commits
	if _, err := appendTx(t, b, eventstore.Append{StreamID: uuid.New(), Events: []domain.Event{domain.FlowRunPending{}}}); err != nil {
		t.Fatal(err)
	}
	got, err := b.store.ReadAll(ctx, b.pool, eventstore.Checkpoint{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("reader returned %d events while an older transaction is open; it could skip that one", len(got))
	}
	if err := old.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// Other tests' transactions in this database (none here) would hold the
	// reader back for a moment too.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got, err = b.store.ReadAll(ctx, b.pool, eventstore.Checkpoint{}, 10); err != nil || len(got) == 2 {
			break
		}
	}
	if err != nil || len(got) != 2 || got[0].Type != "FlowRunLate" {
		t.Fatalf("after commit: %v %+v", err, got)
	}
	cp := eventstore.CheckpointOf(got[0])
	parsed, err := eventstore.ParseCheckpoint(cp.String())
	if err != nil || parsed != cp {
		t.Fatalf("checkpoint round trip: %v %v", parsed, err)
	}
	rest := readUntil(t, 1, func() ([]domain.Envelope, error) { return b.store.ReadAll(ctx, b.pool, cp, 10) })
	if len(rest) != 1 || rest[0].Position != got[1].Position {
		t.Fatalf("after checkpoint: %+v", rest)
	}
}

// TestReaderPassesOverTransactionsOfOtherDatabases: transaction ids are
// shared by every database of a server, but a transaction runs in one
// database, so one left open in another database (another application, a
// session in pgadmin, another test) never holds the log's readers back.
func TestReaderPassesOverTransactionsOfOtherDatabases(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	other := pgtest.Pool(t) // another database of the same server
	if _, err := other.Exec(ctx, `CREATE TABLE elsewhere (x int)`); err != nil {
		t.Fatal(err)
	}
	open, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Rollback(ctx) //nolint:errcheck
	var foreign uint64
	if err := open.QueryRow(ctx, `INSERT INTO elsewhere VALUES (1) RETURNING pg_current_xact_id()::text::bigint`).Scan(&foreign); err != nil {
		t.Fatal(err)
	}
	// Two commits here after it: the snapshot of a reader then lists the
	// foreign transaction as running.
	for range 2 {
		if _, err := appendTx(t, b, eventstore.Append{StreamID: uuid.New(), Events: []domain.Event{domain.FlowRunPending{}}}); err != nil {
			t.Fatal(err)
		}
	}
	var held bool
	if err := b.pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint <= $1`, foreign).Scan(&held); err != nil || !held {
		t.Fatalf("the server's oldest running transaction is not the foreign one (%v): the test proves nothing", err)
	}
	// A transaction of another database that ends while a read looks at the
	// server counts as running for that read, so one read among other
	// tests' commits may return nothing yet; the foreign transaction stays
	// open throughout, so any read that returns the events proves the point.
	var got []domain.Envelope
	for deadline := time.Now().Add(10 * time.Second); len(got) < 2 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got, err = b.store.ReadAll(ctx, b.pool, eventstore.Checkpoint{}, 10); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 2 {
		t.Fatalf("reader returned %d of 2 committed events while a transaction of another database was open", len(got))
	}
	head, ok, err := b.store.Head(ctx, b.pool)
	if err != nil || !ok || head != eventstore.CheckpointOf(got[1]) {
		t.Fatalf("head %v %v %v, want the last event read %v", head, ok, err, eventstore.CheckpointOf(got[1]))
	}
}

// TestReadBetweenReadsTheRangeItIsGiven: ReadBetween reads the events
// after one checkpoint up to another, in log order, and does not bound
// itself by the transactions running now. Its callers pass a checkpoint of
// the stable prefix read earlier (a replay's target), which a second look
// at the running transactions could put out of reach for a moment: a
// transaction of another database that ends during that look counts as
// one that may still append here.
func TestReadBetweenReadsTheRangeItIsGiven(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	for range 3 {
		if _, err := appendTx(t, b, eventstore.Append{StreamID: uuid.New(), Events: []domain.Event{domain.FlowRunPending{}}}); err != nil {
			t.Fatal(err)
		}
	}
	all := readUntil(t, 3, func() ([]domain.Envelope, error) { return b.store.ReadAll(ctx, b.pool, eventstore.Checkpoint{}, 10) })
	// a transaction of this database that started before a fourth event
	// holds back every stable read from here on
	open, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Rollback(ctx) //nolint:errcheck
	if _, err := open.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
		t.Fatal(err)
	}
	if _, err := appendTx(t, b, eventstore.Append{StreamID: uuid.New(), Events: []domain.Event{domain.FlowRunPending{}}}); err != nil {
		t.Fatal(err)
	}
	fourth, ok, err := b.store.Head(ctx, b.pool)
	if err != nil || !ok || !eventstore.CheckpointOf(all[2]).Less(fourth) {
		t.Fatalf("head %v %v %v, want the fourth event", fourth, ok, err)
	}
	if got, err := b.store.ReadAll(ctx, b.pool, eventstore.CheckpointOf(all[2]), 10); err != nil || len(got) != 0 {
		t.Fatalf("a stable read past an open transaction returned %d events (%v): the test proves nothing", len(got), err)
	}
	for _, c := range []struct {
		after, upTo eventstore.Checkpoint
		limit, want int
	}{
		{eventstore.Checkpoint{}, eventstore.CheckpointOf(all[1]), 10, 2},
		{eventstore.CheckpointOf(all[0]), eventstore.CheckpointOf(all[2]), 10, 2},
		{eventstore.CheckpointOf(all[0]), eventstore.CheckpointOf(all[2]), 1, 1},
		{eventstore.CheckpointOf(all[2]), fourth, 10, 1}, // past the open transaction
		{eventstore.CheckpointOf(all[2]), eventstore.CheckpointOf(all[2]), 10, 0},
	} {
		got, err := b.store.ReadBetween(ctx, b.pool, c.after, c.upTo, c.limit)
		if err != nil || len(got) != c.want {
			t.Fatalf("ReadBetween(%v, %v, %d): %d events (%v), want %d", c.after, c.upTo, c.limit, len(got), err, c.want)
		}
		for i, e := range got {
			if !c.after.Less(eventstore.CheckpointOf(e)) || c.upTo.Less(eventstore.CheckpointOf(e)) || i > 0 && !eventstore.CheckpointOf(got[i-1]).Less(eventstore.CheckpointOf(e)) {
				t.Fatalf("ReadBetween(%v, %v): event %v out of the range or out of order", c.after, c.upTo, eventstore.CheckpointOf(e))
			}
		}
	}
}

func ExampleCheckpoint_String() {
	fmt.Println(eventstore.Checkpoint{TransactionID: 812, Position: 40}.String())
	// Output: 812-40
}

func TestChainedAppendsAndReadStreamsAfter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	a, c := uuid.New(), uuid.New()
	// one call continues stream a with different metadata
	_, err := appendTx(t, b,
		eventstore.Append{StreamID: a, Events: []domain.Event{domain.FlowRunLate{}, domain.FlowRunPending{}}, Metadata: domain.Metadata{Actor: "scheduler"}},
		eventstore.Append{StreamID: a, ExpectedVersion: 2, Events: []domain.Event{domain.FlowRunStarted{}}, Metadata: domain.Metadata{Actor: "worker:w1"}},
		eventstore.Append{StreamID: c, Events: []domain.Event{domain.TaskRunReset{}}},
	)
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.store.ReadStreamsAfter(ctx, b.pool, map[uuid.UUID]int64{a: 1, c: 0})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Version != 2 || got[1].Metadata.Actor != "worker:w1" || got[2].StreamID != c {
		t.Fatalf("read %+v", got)
	}
	// a chain with a gap is still refused
	_, err = appendTx(t, b,
		eventstore.Append{StreamID: a, ExpectedVersion: 3, Events: []domain.Event{domain.FlowRunCompleted{}}},
		eventstore.Append{StreamID: a, ExpectedVersion: 5, Events: []domain.Event{domain.FlowRunCompleted{}}},
	)
	if !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("gap in a chain: got %v, want a conflict", err)
	}
}

// TestAppendAloneGroupsButFailsAlone: concurrent single appends share
// statements, yet a call behind its stream's version fails by itself.
func TestAppendAloneGroupsButFailsAlone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	stale := uuid.New()
	if _, err := b.store.AppendAlone(ctx, eventstore.Append{StreamID: stale, Events: []domain.Event{domain.FlowRunLate{}}}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 64)
	ids := make([]uuid.UUID, 64)
	for i := range errs {
		ids[i] = uuid.New()
		wg.Go(func() {
			a := eventstore.Append{StreamID: ids[i], Events: []domain.Event{domain.TaskRunReset{}}}
			if i == 17 {
				a = eventstore.Append{StreamID: stale, Events: []domain.Event{domain.FlowRunPending{}}} // expects a new stream: stale
			}
			envs, err := b.store.AppendAlone(ctx, a)
			if err == nil && (len(envs) != 1 || envs[0].StreamID != a.StreamID || envs[0].Position == 0) {
				err = fmt.Errorf("call %d got envelopes %+v", i, envs)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if i == 17 {
			if !errors.Is(err, eventstore.ErrConflict) {
				t.Errorf("the stale call: got %v, want a conflict", err)
			}
		} else if err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
	var n int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil || n != 64 {
		t.Fatalf("%d events stored, want 64 (1 + 63): %v", n, err)
	}
}

// readUntil reads until it gets n events, for up to 10 s: a read up to the
// stable head may be held back for a moment by a transaction that another
// test has open, even after an earlier read saw further.
func readUntil(t *testing.T, n int, read func() ([]domain.Envelope, error)) []domain.Envelope {
	t.Helper()
	var got []domain.Envelope
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got, err = read(); err != nil {
			t.Fatal(err)
		}
		if len(got) >= n {
			break
		}
	}
	return got
}

func readAll(t *testing.T, b testBundle, id uuid.UUID) []domain.Envelope {
	t.Helper()
	envs, err := b.store.ReadStream(context.Background(), b.pool, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	return envs
}

// InStreamOrder puts a stream's events in version order in the places they
// take, leaving other streams and a slice in order as they are.
func TestInStreamOrder(t *testing.T) {
	t.Parallel()
	a, b := uuid.New(), uuid.New()
	env := func(id uuid.UUID, v, pos int64) domain.Envelope {
		return domain.Envelope{StreamID: id, Version: v, Position: pos}
	}
	got := []domain.Envelope{env(a, 1, 1), env(b, 1, 2), env(a, 3, 3), env(b, 2, 4), env(a, 4, 5), env(a, 2, 6)}
	eventstore.InStreamOrder(got)
	want := []domain.Envelope{env(a, 1, 1), env(b, 1, 2), env(a, 2, 6), env(b, 2, 4), env(a, 3, 3), env(a, 4, 5)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	eventstore.InStreamOrder(got)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("a slice in order was changed: %v", got)
	}
}
