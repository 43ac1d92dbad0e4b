package localpg

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// requireBinaries skips the test when the machine has no PostgreSQL server
// binaries but the developer pointed Ordo at an external database; without
// either, the test fails, because then nothing can run Ordo's storage tests.
func requireBinaries(t *testing.T) {
	t.Helper()
	if _, err := findBinaries(t.Context(), ""); err != nil {
		if os.Getenv("ORDO_DATABASE_URL") != "" || os.Getenv("DATABASE_URL") != "" {
			t.Skipf("no local PostgreSQL binaries and an external database is configured: %v", err)
		}
		t.Fatal(err)
	}
}

// tempDir returns a fresh directory that the postgres user can traverse
// (t.TempDir's directories are private to the current user).
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "localpg-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func start(t *testing.T, dataDir string) *Server {
	t.Helper()
	srv, err := Start(t.Context(), Options{DataDir: dataDir, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return srv
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func TestStart(t *testing.T) {
	t.Parallel()
	requireBinaries(t)

	t.Run("QueriesThenStops", func(t *testing.T) {
		t.Parallel()
		dataDir := filepath.Join(tempDir(t), "data")
		srv := start(t, dataDir)
		if srv.Reused() {
			t.Error("Reused() = true for a server Start started")
		}
		wantPrefix := "postgres://postgres@127.0.0.1:"
		if !strings.HasPrefix(srv.URL(), wantPrefix) || !strings.HasSuffix(srv.URL(), "/postgres?sslmode=disable") {
			t.Errorf("URL() = %q", srv.URL())
		}

		conn := connect(t, srv.URL())
		var one int
		if err := conn.QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("SELECT 1 = %d, %v", one, err)
		}
		var fsync, maxConns string
		if err := conn.QueryRow(t.Context(), "SELECT current_setting('fsync'), current_setting('max_connections')").Scan(&fsync, &maxConns); err != nil {
			t.Fatal(err)
		}
		if fsync != "off" || maxConns != "200" {
			t.Errorf("fsync = %s, max_connections = %s; want off, 200", fsync, maxConns)
		}
		_ = conn.Close(t.Context())

		if err := srv.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, srv.URL()); err == nil {
			_ = c.Close(ctx)
			t.Error("connected after Stop")
		}
		if _, err := os.Stat(filepath.Join(dataDir, "postmaster.pid")); !os.IsNotExist(err) {
			t.Errorf("postmaster.pid after Stop: %v", err)
		}
	})

	t.Run("RestartKeepsData", func(t *testing.T) {
		t.Parallel()
		dataDir := filepath.Join(tempDir(t), "data")

		srv := start(t, dataDir)
		conn := connect(t, srv.URL())
		if _, err := conn.Exec(t.Context(), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')"); err != nil {
			t.Fatal(err)
		}
		_ = conn.Close(t.Context())
		if err := srv.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}

		srv = start(t, dataDir)
		var v string
		if err := connect(t, srv.URL()).QueryRow(t.Context(), "SELECT v FROM kept").Scan(&v); err != nil || v != "still here" {
			t.Fatalf("after restart: v = %q, %v", v, err)
		}
	})

	t.Run("ReusesRunningServer", func(t *testing.T) {
		t.Parallel()
		dataDir := filepath.Join(tempDir(t), "data")
		first := start(t, dataDir)

		second, err := Start(t.Context(), Options{DataDir: dataDir, Port: 1}) // Port is ignored for a running server
		if err != nil {
			t.Fatal(err)
		}
		if !second.Reused() || second.Port() != first.Port() {
			t.Errorf("second Start: Reused() = %v, Port() = %d; want true, %d", second.Reused(), second.Port(), first.Port())
		}
		if err := connect(t, second.URL()).Ping(t.Context()); err != nil {
			t.Error(err)
		}
	})

	t.Run("FixedPort", func(t *testing.T) {
		t.Parallel()
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		srv, err := Start(t.Context(), Options{DataDir: filepath.Join(tempDir(t), "data"), Port: port, Fast: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Stop(context.Background()) })
		if srv.Port() != port {
			t.Errorf("Port() = %d, want %d", srv.Port(), port)
		}
	})
}

func TestStartRefusesUnreachableDataDir(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root hands the data dir to another user")
	}
	requireBinaries(t)

	private := filepath.Join(tempDir(t), "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Start(t.Context(), Options{DataDir: filepath.Join(private, "data")})
	if err == nil || !strings.Contains(err.Error(), "not traversable") || !strings.Contains(err.Error(), private) {
		t.Fatalf("Start under a private dir: err = %v, want one naming %s as not traversable", err, private)
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		opts  Options
		field string
	}{
		{"MissingDataDir", Options{}, "DataDir"},
		{"NegativePort", Options{DataDir: "x", Port: -1}, "Port"},
		{"PortTooLarge", Options{DataDir: "x", Port: 70000}, "Port"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Start(t.Context(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("err = %v, want one naming %s", err, tt.field)
			}
		})
	}
}

func TestVersionOf(t *testing.T) {
	t.Parallel()
	for dir, want := range map[string]int{
		"/usr/lib/postgresql/15/bin":          15,
		"/usr/lib/postgresql/9.6/bin":         9,
		"/opt/homebrew/opt/postgresql@16/bin": 16,
		"/usr/local/opt/postgresql@14/bin":    14,
		"/usr/lib/postgresql/something/bin":   0,
	} {
		if got := versionOf(dir); got != want {
			t.Errorf("versionOf(%q) = %d, want %d", dir, got, want)
		}
	}
}
