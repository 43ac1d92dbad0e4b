// Package pgtest gives each test a real PostgreSQL database of its own,
// migrated to the current schema, and drops it when the test ends.
//
// The server comes from ORDO_DATABASE_URL (or DATABASE_URL); `make test` starts
// a private one and sets both. On that server the first caller creates a
// template database named after migrations.Fingerprint() and migrates it,
// once across every test process running at the same time; each test then
// gets a clone of it, which takes a few tens of milliseconds instead of a
// migration run.
//
// It is test plumbing: it imports migrations, and eventstore only to
// configure pools as the server does; it must never import projections,
// commands, jobs or api.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/migrations"
)

// maxConns is the size of each test's pool.
const maxConns = 20

// lockKey is the advisory lock that serialises template creation across test
// processes ("ordotmpl").
const lockKey int64 = 0x6f72646f746d706c

// Pool returns a pool of at most 20 connections on a new database cloned from
// the migrated template. The pool is closed and the database dropped when
// the test ends.
func Pool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	h := harnessFor(tb)
	name := h.clone(tb)
	cfg, err := pgxpool.ParseConfig(h.base)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	cfg.ConnConfig.Database = name
	cfg.MaxConns = maxConns
	eventstore.ConfigurePool(cfg)
	pool, err := pgxpool.NewWithConfig(tb.Context(), cfg)
	if err != nil {
		tb.Fatalf("pgtest: open pool on %s: %v", name, err)
	}
	tb.Cleanup(pool.Close) // runs before the drop registered by clone
	return pool
}

// URL returns the connection URL of a new database cloned from the migrated
// template, for tests that hand it to another process (the ordo binary). The
// database is dropped when the test ends, even if connections remain.
func URL(tb testing.TB) string {
	tb.Helper()
	h := harnessFor(tb)
	u, err := withDatabase(h.base, h.clone(tb))
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return u
}

// MainURL is URL for a TestMain, which has no testing.TB: drop removes
// the database.
func MainURL(ctx context.Context) (url string, drop func() error, err error) {
	h, err := harnessOnce()
	if err != nil {
		return "", nil, err
	}
	name, err := h.create(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("pgtest: %w", err)
	}
	if url, err = withDatabase(h.base, name); err != nil {
		_ = h.drop(name)
		return "", nil, fmt.Errorf("pgtest: %w", err)
	}
	return url, func() error { return h.drop(name) }, nil
}

// AdminURL returns the URL of the server's maintenance database (postgres),
// where databases are created and dropped.
func AdminURL(tb testing.TB) string {
	tb.Helper()
	base, err := baseURL()
	if err != nil {
		tb.Fatal(err)
	}
	u, err := withDatabase(base, "postgres")
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return u
}

// harness is the per-process state: the server, an admin pool on its
// maintenance database, and the ready template.
type harness struct {
	base     string        // the URL from the environment
	admin    *pgxpool.Pool // on the maintenance database
	template string
	strategy string // " STRATEGY FILE_COPY", or "" before PostgreSQL 15
}

var (
	harnessOnce = sync.OnceValues(newHarness)
)

func harnessFor(tb testing.TB) *harness {
	tb.Helper()
	h, err := harnessOnce()
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

func baseURL() (string, error) {
	for _, name := range []string{"ORDO_DATABASE_URL", "DATABASE_URL"} {
		if v := os.Getenv(name); v != "" {
			return v, nil
		}
	}
	return "", errors.New("pgtest: these tests need PostgreSQL and neither ORDO_DATABASE_URL nor DATABASE_URL is set: " +
		"run them with `make test`, which starts a private server " +
		"(or `go run ./internal/localpg/withpg -- go test ./...`), " +
		"or set DATABASE_URL to a server where this user may CREATE DATABASE")
}

func newHarness() (*harness, error) {
	base, err := baseURL()
	if err != nil {
		return nil, err
	}
	adminURL, err := withDatabase(base, "postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	cfg, err := pgxpool.ParseConfig(adminURL)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	cfg.MaxConns = 4
	admin, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgtest: connect to %s: %w", redact(adminURL), err)
	}
	h := &harness{base: base, admin: admin}

	var versionNum int
	if err := admin.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&versionNum); err != nil {
		admin.Close()
		return nil, fmt.Errorf("pgtest: connect to %s: %w", redact(adminURL), err)
	}
	if versionNum >= 150000 {
		h.strategy = " STRATEGY FILE_COPY"
	}

	fp := migrations.Fingerprint()
	h.template = "ordo_tmpl_" + fp[:min(12, len(fp))]
	if err := h.ensureTemplate(ctx, adminURL); err != nil {
		admin.Close()
		return nil, fmt.Errorf("pgtest: template database %s: %w", h.template, err)
	}
	return h, nil
}

// ensureTemplate creates and migrates the template database unless another
// process already did. A session advisory lock on its own connection makes
// concurrent test processes wait for the first one.
func (h *harness) ensureTemplate(ctx context.Context, adminURL string) error {
	ready, _, err := h.templateState(ctx, h.admin)
	if err != nil || ready {
		return err
	}

	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx)) // also releases the lock
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockKey); err != nil {
		return fmt.Errorf("take lock: %w", err)
	}
	ready, exists, err := h.templateState(ctx, conn)
	if err != nil || ready {
		return err
	}

	tmpl := pgx.Identifier{h.template}.Sanitize()
	if exists {
		// Left half-made by a process that died while holding the lock.
		if _, err := conn.Exec(ctx, "DROP DATABASE "+tmpl+" WITH (FORCE)"); err != nil {
			return err
		}
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+tmpl); err != nil {
		return err
	}
	cfg, err := pgxpool.ParseConfig(adminURL)
	if err != nil {
		return err
	}
	cfg.ConnConfig.Database = h.template
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	err = migrations.Up(ctx, pool)
	pool.Close()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// No connections from now on: CREATE DATABASE ... TEMPLATE fails while
	// anyone is connected to the template.
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+tmpl+" WITH ALLOW_CONNECTIONS false IS_TEMPLATE true"); err != nil {
		return err
	}
	_, err = conn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", h.template)
	return err
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// templateState reports whether the template exists, and whether it is ready
// (marked as a template, which is the last step of its creation).
func (h *harness) templateState(ctx context.Context, q querier) (ready, exists bool, err error) {
	err = q.QueryRow(ctx, "SELECT datistemplate FROM pg_database WHERE datname = $1", h.template).Scan(&ready)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return false, false, nil
	case err != nil:
		return false, false, err
	}
	return ready, true, nil
}

// clone creates a new database from the template, registers its drop as a
// cleanup of tb, and returns its name.
func (h *harness) clone(tb testing.TB) string {
	tb.Helper()
	name, err := h.create(tb.Context())
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		if err := h.drop(name); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return name
}

// create creates a new database from the template and returns its name.
func (h *harness) create(ctx context.Context) (string, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "ordo_test_" + hex.EncodeToString(b[:])
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize() + " TEMPLATE " + pgx.Identifier{h.template}.Sanitize() + h.strategy
	if _, err := h.admin.Exec(ctx, sql); err != nil {
		return "", fmt.Errorf("clone template %s: %w", h.template, err)
	}
	return name, nil
}

// drop removes a database create made, even if connections remain.
func (h *harness) drop(name string) error {
	// a test's context is already cancelled when its cleanups run
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := h.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop test database %s: %w", name, err)
	}
	return nil
}

// withDatabase returns connString (a URL or a keyword/value string) with its
// database replaced by db.
func withDatabase(connString, db string) (string, error) {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err != nil {
			return "", fmt.Errorf("parse database URL: %w", err)
		}
		u.Path, u.RawPath = "/"+db, ""
		return u.String(), nil
	}
	if _, err := pgx.ParseConfig(connString); err != nil {
		return "", fmt.Errorf("parse database connection string: %w", err)
	}
	// Later keywords win over earlier ones.
	return connString + " dbname='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(db) + "'", nil
}

// redact hides the password of a URL for error messages.
func redact(connString string) string {
	if u, err := url.Parse(connString); err == nil && u.User != nil {
		return u.Redacted()
	}
	return connString
}
