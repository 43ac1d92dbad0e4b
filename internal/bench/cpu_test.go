package bench

import (
	"testing"
	"time"

	"github.com/ordoflow/ordo/internal/pgtest"
)

// TestServerCPU checks that the CPU time of a local PostgreSQL is read, and
// that it counts a query's work, in a backend that is still connected and
// in one that has ended.
func TestServerCPU(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := pgtest.Pool(t)
	m := newServerCPU(ctx, pool)
	if m == nil {
		t.Skip("the test database's server runs where /proc does not show it")
	}
	const burn = `SELECT count(*) FROM generate_series(1, 300000) g WHERE md5(g::text) LIKE 'a%'`
	before := m.used()
	if _, err := pool.Exec(ctx, burn); err != nil {
		t.Fatal(err)
	}
	live := m.used()
	if live <= before {
		t.Fatalf("server CPU %s before a query that burns CPU and %s after it", before, live)
	}
	// The backend that ran it ends: its time must stay counted once the
	// postmaster has reaped it (it is counted nowhere for a moment before).
	pool.Reset()
	deadline := time.Now().Add(time.Minute)
	for after := m.used(); after < live; after = m.used() {
		if time.Now().After(deadline) {
			t.Fatalf("server CPU went from %s to %s when a backend ended", live, after)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
