package eventstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// TestHistoryEpoch checks that a connection of a configured pool notes the
// history it reached (system identifier and timeline), even as a role
// without privileges, and that the epoch moves when a connection reaches
// another history, as after a failover, and only then.
func TestHistoryEpoch(t *testing.T) {
	ctx := t.Context()
	pool := pgtest.Pool(t)
	if _, err := pool.Exec(ctx, `DROP ROLE IF EXISTS ordo_history_test; CREATE ROLE ordo_history_test LOGIN`); err != nil {
		t.Fatal(err)
	}
	cfg := pool.Config().Copy()
	cfg.ConnConfig.User = "ordo_history_test"
	cfg.AfterConnect = nil
	eventstore.ConfigurePool(cfg)
	plain, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		plain.Close()
		_, _ = pool.Exec(context.Background(), `DROP ROLE IF EXISTS ordo_history_test`)
	})
	var h string
	if err := plain.QueryRow(ctx, eventstore.HistorySQL).Scan(&h); err != nil {
		t.Fatalf("a role without privileges cannot read the history: %v", err)
	}
	if id, timeline, ok := strings.Cut(h, "/"); !ok || id == "" || len(timeline) != 8 {
		t.Fatalf("history %q, want system identifier/timeline", h)
	}
	seen := eventstore.SeenHistory()
	if seen != h {
		t.Fatalf("connections noted history %q, the database says %q", seen, h)
	}

	e := eventstore.HistoryEpoch()
	eventstore.NoteHistoryName(h)
	if eventstore.HistoryEpoch() != e {
		t.Error("the epoch moved on a connection to the same history")
	}
	eventstore.NoteHistoryName(strings.Split(h, "/")[0] + "/00000002")
	if eventstore.HistoryEpoch() != e+1 {
		t.Error("the epoch did not move on a connection to a new timeline")
	}
	eventstore.NoteHistoryName(h)
}
