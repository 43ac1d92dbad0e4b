package patroni_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/internal/patroni"
)

// TestFailoverKeepsCommittedRows writes through the multi-host URL, kills
// the primary's postmaster, writes again on the promoted node, switches
// back over, and finds every committed row; Stop leaves nothing running.
func TestFailoverKeepsCommittedRows(t *testing.T) {
	t.Parallel()
	c := patroni.StartTest(t, patroni.Options{})
	ctx := t.Context()
	insert := func(v int) {
		t.Helper()
		var err error
		for range 100 { // the connection fails while no node is primary
			var conn *pgx.Conn
			if conn, err = pgx.Connect(ctx, c.URL("postgres")); err == nil {
				_, err = conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS t (v int); INSERT INTO t VALUES (`+strconv.Itoa(v)+`)`)
				conn.Close(ctx)
				if err == nil {
					return
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("insert %d: %v", v, err)
	}
	insert(1)
	killed, at, err := c.KillPrimary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var standby *patroni.Node
	for _, n := range c.Nodes {
		if n != killed {
			standby = n
		}
	}
	promoted, err := c.WaitPrimary(ctx, standby, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s killed; %s accepts writes %v later", killed.Name, standby.Name, promoted.Sub(at).Round(time.Millisecond))
	insert(2)
	if err := c.WaitReplicating(ctx, true); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s rejoined as the synchronous standby", killed.Name)
	if _, err := c.Switchover(ctx); err != nil {
		t.Fatal(err)
	}
	insert(3)
	// The new leader records the switch in its history on its next loop.
	var h []patroni.Promotion
	for range 600 {
		if h, err = c.History(ctx); err == nil && len(h) >= 2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(h) != 2 || h[0].Node != standby.Name || h[1].Node != killed.Name {
		t.Errorf("history %+v, want %s promoted then %s", h, standby.Name, killed.Name)
	}
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var got string
	if err := conn.QueryRow(ctx, `SELECT string_agg(v::text, ',' ORDER BY v) FROM t`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "1,2,3" {
		t.Errorf("rows %s after two failovers, want 1,2,3", got)
	}

	var pids []int
	for _, n := range c.Nodes {
		if b, err := os.ReadFile(filepath.Join(c.Dir(), n.Name, "postmaster.pid")); err == nil {
			pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
			pids = append(pids, pid)
		}
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("postmaster %d still runs after Stop", pid)
		}
	}
}
