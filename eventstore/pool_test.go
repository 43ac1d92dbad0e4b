package eventstore_test

import (
	"slices"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/internal/pgtest"
)

// TestPoolSendsUUIDs checks the binary encoding ConfigurePool sets up
// (pgtest's pools have it) for ids alone, in arrays and in COPY.
func TestPoolSendsUUIDs(t *testing.T) {
	ctx := t.Context()
	pool := pgtest.Pool(t)
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.Nil}
	var one string
	var many []string
	if err := pool.QueryRow(ctx, `SELECT $1::uuid::text, $2::uuid[]::text[]`, ids[0], ids).Scan(&one, &many); err != nil {
		t.Fatal(err)
	}
	if one != ids[0].String() || !slices.Equal(many, []string{ids[0].String(), ids[1].String(), ids[2].String()}) {
		t.Fatalf("sent %v, stored %s and %v", ids, one, many)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `CREATE TEMP TABLE copied (id uuid)`); err != nil {
		t.Fatal(err)
	}
	rows := [][]any{{ids[0]}, {ids[1]}}
	if _, err := conn.CopyFrom(ctx, []string{"copied"}, []string{"id"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM copied WHERE id = ANY($1)`, ids).Scan(&n); err != nil || n != 2 {
		t.Fatalf("copied ids found: %d, %v", n, err)
	}
}
