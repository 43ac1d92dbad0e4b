package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/projections"
	"github.com/ordoflow/ordo/projections/projtest"
)

// TestReplayVerifyIsReadOnly: `ordo replay --verify` leaves the live tables
// as they are (the same tables, the same rows), says what it verified in
// words and prints one throughput figure; `--verify --swap` and a plain
// replay put rebuilt tables in their place.
func TestReplayVerifyIsReadOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, pool, proj, log := projectedLog(t)
	log.CreateRun(projtest.RunSpec{Name: "done"}).Complete()
	log.CreateRun(projtest.RunSpec{Name: "waiting"})
	if _, err := proj.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}

	// a swap replaces the tables: their ids change; a row written to a live
	// table that a rebuild would not produce stays only if nothing swapped
	tables := func() string {
		t.Helper()
		var ids string
		if err := pool.QueryRow(ctx, `SELECT string_agg(to_regclass('public.' || t)::oid::text, ',' ORDER BY t)
			FROM unnest(ARRAY['deployments', 'flow_runs', 'task_runs', 'task_run_attempts', 'state_history']) AS t`).Scan(&ids); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	var events, position, txid int64
	if err := pool.QueryRow(ctx, `SELECT count(*), max(position), max(transaction_id::text::bigint) FROM events`).Scan(&events, &position, &txid); err != nil {
		t.Fatal(err)
	}
	before := tables()

	out, _, err := execute(t, newReplayCommand, "--verify", "--database-url", url)
	if err != nil {
		t.Fatalf("replay --verify: %v\n%s", err, out)
	}
	if after := tables(); after != before {
		t.Errorf("replay --verify swapped the live tables (ids %s, then %s)", before, after)
	}
	want := fmt.Sprintf("verified %d events, the log up to position %d (written by transaction %d): every one a legal transition", events, position, txid)
	if !strings.Contains(out, want) {
		t.Errorf("replay --verify does not say %q:\n%s", want, out)
	}
	if !strings.Contains(out, "nothing swapped: the live read models were kept") {
		t.Errorf("replay --verify does not say that it swapped nothing:\n%s", out)
	}
	rates := regexp.MustCompile(`[0-9.]+ events/s`).FindAllString(out, -1)
	if len(rates) != 1 || !strings.Contains(out, rates[0]+" over the whole replay") {
		t.Errorf("want one throughput figure, over the whole replay; got %v:\n%s", rates, out)
	}

	out, _, err = execute(t, newReplayCommand, "--verify", "--swap", "--database-url", url)
	if err != nil || !strings.Contains(out, "the rebuilt read models are live") {
		t.Fatalf("replay --verify --swap: %v\n%s", err, out)
	}
	swapped := tables()
	if swapped == before {
		t.Errorf("replay --verify --swap kept the live tables")
	}
	if _, _, err := execute(t, newReplayCommand, "--database-url", url); err != nil {
		t.Fatal(err)
	}
	if tables() == swapped {
		t.Errorf("a replay kept the live tables")
	}
	for _, args := range [][]string{{"--swap"}, {"--verify", "--swap", "--dry-run"}} {
		_, _, err := execute(t, newReplayCommand, append(args, "--database-url", url)...)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), "--swap") {
			t.Errorf("replay %v: %v (exit %d), want 2 naming --swap", args, err, exitCode(err))
		}
	}
}

// projectedLog is a new database with an event store, a projector and a
// log builder on it, for the commands that read or rebuild the log.
func projectedLog(t *testing.T) (url string, pool *pgxpool.Pool, proj *projections.Projector, log *projtest.Log) {
	t.Helper()
	url = pgtest.URL(t)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := eventstore.New(pool, domain.NewRegistry())
	t.Cleanup(store.Close)
	proj, err = projections.NewProjector(store, projections.ProjectorOptions{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return url, pool, proj, projtest.NewLog(t, store)
}
