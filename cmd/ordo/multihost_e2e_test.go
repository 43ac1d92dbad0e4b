package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/riverjob"
)

// multiHost returns connection strings, in the URL form and in the keyword
// form, that name first down (a host:port where no PostgreSQL answers) and then the
// database of cfg, asking for the host that accepts writes: how a highly
// available PostgreSQL is named (docs/OPERATIONS.md).
func multiHost(t *testing.T, cfg *pgconn.Config, down string) (urlForm, keywordForm string) {
	t.Helper()
	downHost, downPort, err := net.SplitHostPort(down)
	if err != nil {
		t.Fatal(err)
	}
	sslmode := "disable"
	if cfg.TLSConfig != nil {
		sslmode = "require"
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(cfg.User, cfg.Password),
		Host:     down + "," + net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)),
		Path:     "/" + cfg.Database,
		RawQuery: url.Values{"sslmode": {sslmode}, "target_session_attrs": {"read-write"}}.Encode(),
	}
	quote := func(s string) string { return `'` + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + `'` }
	keywordForm = fmt.Sprintf("host=%s,%s port=%s,%d user=%s password=%s dbname=%s sslmode=%s target_session_attrs=read-write",
		downHost, cfg.Host, downPort, cfg.Port, quote(cfg.User), quote(cfg.Password), quote(cfg.Database), sslmode)
	return u.String(), keywordForm
}

const multiHostDeployment = `
name: multihost
work_queue: multihost
flow:
  name: multihost
  tasks:
    - name: hello
      command: [sh, -c, 'echo hello']
`

// downHost listens on a loopback port and hangs up on every connection, as
// a host whose PostgreSQL is gone does; it counts the connections tried.
func downHost(t *testing.T) (addr string, tried *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	tried = new(atomic.Int64)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			tried.Add(1)
			conn.Close()
		}
	}()
	return ln.Addr().String(), tried
}

// With a connection string whose first host is down, every process that
// opens the database connects to the next one: the CLI commands in the
// keyword form, the server and the worker in the URL form. The query that
// deploy/kubernetes gives KEDA counts the queue's task runs on the way.
func TestMultiHostConnectionStringSkipsAHostThatIsDown(t *testing.T) {
	t.Parallel()
	cfg, err := pgconn.ParseConfig(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	down, tried := downHost(t)
	urlForm, keywordForm := multiHost(t, cfg, down)
	c := startClusterOn(t, urlForm, nil) // `ordo migrate up` and the server, in the URL form
	keyword := []string{"ORDO_DATABASE_URL=" + keywordForm}
	cli := func(args ...string) string {
		t.Helper()
		out, code := c.ordoAt("", keyword, args...)
		if code != 0 {
			t.Fatalf("ordo %s with %q: exit %d\n%s", strings.Join(args, " "), keywordForm, code, out)
		}
		return out
	}
	cli("migrate", "up")
	if out := cli("migrate", "version"); !strings.HasSuffix(strings.TrimSpace(out), ": current") {
		t.Fatalf("migrate version:\n%s", out)
	}

	ctx := context.Background()
	pool, err := pgxpool.New(ctx, keywordForm)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	depth := func() int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, riverjob.ScalerQuery("multihost")).Scan(&n); err != nil {
			t.Fatalf("the scaler's query: %v", err)
		}
		return n
	}

	c.ordo("deploy", "-f", c.writeFile("deployment.yaml", multiHostDeployment))
	c.ordo("run", "multihost")
	if n := depth(); n != 1 {
		t.Fatalf("with no worker, the scaler's query counts %d task runs of the queue, want 1", n)
	}
	c.start("worker", "-q", "multihost") // in the URL form
	if out, code := c.ordoCode("run", "multihost", "--watch"); code != 0 || !strings.Contains(out, "ended COMPLETED") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
	// the first run too, as the read models show it
	for deadline := time.Now().Add(2 * time.Minute); strings.Count(c.ordo("runs", "ls", "--state", "completed"), "COMPLETED") != 2; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the first run did not complete:\n%s", c.ordo("runs", "ls"))
		}
	}
	// River marks a worked job completed a moment after the run's events
	for deadline := time.Now().Add(2 * time.Minute); depth() != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the scaler's query counts %d task runs after both runs completed, want 0", depth())
		}
	}

	cli("replay", "--verify") // exits 1 on any difference or illegal event
	cli("tokens", "create", "ci", "--scope", "read")
	if out := cli("tokens", "ls"); !strings.Contains(out, "ci") {
		t.Fatalf("tokens ls does not list the token created:\n%s", out)
	}
	// migrate up twice, migrate version, the server, the worker, replay,
	// tokens twice and this test's pool each tried the first host
	if n := tried.Load(); n < 9 {
		t.Errorf("the host that is down was tried %d times, want at least once per process (9)", n)
	}
	if n := c.validateLog(); n == 0 {
		t.Fatal("no events in the log")
	}
}
