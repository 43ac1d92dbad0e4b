package pgtest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/migrations"
)

func adminConn(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func databaseExists(t *testing.T, admin *pgx.Conn, name string) bool {
	t.Helper()
	var exists bool
	if err := admin.QueryRow(t.Context(), "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	return exists
}

func currentDatabase(t *testing.T, q querier) string {
	t.Helper()
	var name string
	if err := q.QueryRow(t.Context(), "SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

func countTables(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	err := pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPool(t *testing.T) {
	t.Parallel()

	t.Run("IsMigrated", func(t *testing.T) {
		t.Parallel()
		pool := Pool(t)
		before := countTables(t, pool)
		if before == 0 {
			t.Fatal("the cloned database has no tables")
		}
		// Up on an already migrated database changes nothing.
		if err := migrations.Up(t.Context(), pool); err != nil {
			t.Fatal(err)
		}
		if after := countTables(t, pool); after != before {
			t.Errorf("migrations.Up on a clone went from %d to %d tables: the template was not fully migrated", before, after)
		}
		v, err := migrations.Status(t.Context(), pool)
		if err != nil {
			t.Fatal(err)
		}
		if !v.Current() {
			t.Errorf("clone schema version = %+v, want current", v)
		}
		if got := pool.Config().MaxConns; got != maxConns {
			t.Errorf("MaxConns = %d, want %d", got, maxConns)
		}
	})

	t.Run("DatabasesAreIsolated", func(t *testing.T) {
		t.Parallel()
		a, b := Pool(t), Pool(t)
		if currentDatabase(t, a) == currentDatabase(t, b) {
			t.Fatal("two Pool calls returned the same database")
		}
		if _, err := a.Exec(t.Context(), "CREATE TABLE only_in_a (id int)"); err != nil {
			t.Fatal(err)
		}
		var found bool
		if err := b.QueryRow(t.Context(), "SELECT to_regclass('only_in_a') IS NOT NULL").Scan(&found); err != nil {
			t.Fatal(err)
		}
		if found {
			t.Error("a table created through one pool is visible through another")
		}
	})

	t.Run("DropsDatabaseAfterTest", func(t *testing.T) {
		t.Parallel()
		admin := adminConn(t)
		var name string
		t.Run("Inner", func(t *testing.T) {
			name = currentDatabase(t, Pool(t))
			if !strings.HasPrefix(name, "ordo_test_") || !databaseExists(t, admin, name) {
				t.Fatalf("database %q: want an existing ordo_test_ database", name)
			}
		})
		if databaseExists(t, admin, name) {
			t.Errorf("database %s still exists after its test ended", name)
		}
	})

	t.Run("TemplateIsLocked", func(t *testing.T) {
		t.Parallel()
		Pool(t)
		h, err := harnessOnce()
		if err != nil {
			t.Fatal(err)
		}
		var isTemplate, allowConn bool
		err = adminConn(t).QueryRow(t.Context(), "SELECT datistemplate, datallowconn FROM pg_database WHERE datname = $1", h.template).
			Scan(&isTemplate, &allowConn)
		if err != nil {
			t.Fatal(err)
		}
		if !isTemplate || allowConn {
			t.Errorf("template %s: datistemplate = %v, datallowconn = %v; want true, false", h.template, isTemplate, allowConn)
		}
	})
}

func TestURL(t *testing.T) {
	t.Parallel()
	admin := adminConn(t)
	var (
		name string
		conn *pgx.Conn
	)
	t.Run("Inner", func(t *testing.T) {
		var err error
		// Left open on purpose, like a binary still running when its test ends.
		conn, err = pgx.Connect(t.Context(), URL(t))
		if err != nil {
			t.Fatal(err)
		}
		name = currentDatabase(t, conn)
		if !strings.HasPrefix(name, "ordo_test_") {
			t.Errorf("URL connects to %q, want an ordo_test_ database", name)
		}
		var n int
		if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM events").Scan(&n); err != nil {
			t.Errorf("the database has no events table: %v", err)
		}
	})
	defer conn.Close(context.Background())
	if databaseExists(t, admin, name) {
		t.Errorf("database %s still exists after its test ended with a connection open", name)
	}
}

func TestAdminURL(t *testing.T) {
	t.Parallel()
	if got := currentDatabase(t, adminConn(t)); got != "postgres" {
		t.Errorf("AdminURL connects to %q, want postgres", got)
	}
}

func TestWithDatabase(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, in, want string
	}{
		{"URL", "postgres://u:p@h:5/app?sslmode=disable", "postgres://u:p@h:5/db1?sslmode=disable"},
		{"URLWithoutDatabase", "postgresql://h", "postgresql://h/db1"},
		{"KeywordValue", "host=h port=5 dbname=app", "host=h port=5 dbname=app dbname='db1'"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := withDatabase(tt.in, "db1")
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("withDatabase(%q) = %q, want %q", tt.in, got, tt.want)
			}
			cfg, err := pgx.ParseConfig(got)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Database != "db1" {
				t.Errorf("parsed database = %q, want db1", cfg.Database)
			}
		})
	}
}

func TestMissingURLSaysHowToRun(t *testing.T) {
	t.Setenv("ORDO_DATABASE_URL", "")
	t.Setenv("DATABASE_URL", "")
	_, err := baseURL()
	if err == nil || !strings.Contains(err.Error(), "make test") {
		t.Errorf("baseURL() error = %v, want one telling to run make test", err)
	}
}

// BenchmarkClone measures one clone of the template (the drops are not timed) with
// each strategy PostgreSQL 15 offers; clone uses the faster one.
func BenchmarkClone(b *testing.B) {
	h := harnessFor(b)
	if h.strategy == "" {
		b.Skip("CREATE DATABASE ... STRATEGY needs PostgreSQL 15")
	}
	tmpl := pgx.Identifier{h.template}.Sanitize()
	for _, strategy := range []string{"FILE_COPY", "WAL_LOG"} {
		b.Run(strategy, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				db := pgx.Identifier{fmt.Sprintf("ordo_bench_%s_%d", strings.ToLower(strategy), i)}.Sanitize()
				if _, err := h.admin.Exec(b.Context(), "CREATE DATABASE "+db+" TEMPLATE "+tmpl+" STRATEGY "+strategy); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _, _ = h.admin.Exec(context.Background(), "DROP DATABASE "+db+" WITH (FORCE)") })
			}
		})
	}
	// Clone and connect, as a test does; the drops run after the timing.
	b.Run("Pool", func(b *testing.B) {
		for b.Loop() {
			if err := Pool(b).Ping(b.Context()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
