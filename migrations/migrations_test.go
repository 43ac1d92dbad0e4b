package migrations_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/migrations"
)

// emptyDatabase returns a pool on a new database with no schema at all.
func emptyDatabase(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, pgtest.AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "ordo_migrate_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(pgtest.AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Database = name
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pool.Close()
		if c, err := pgx.Connect(context.Background(), pgtest.AdminURL(t)); err == nil {
			_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(context.Background())
		}
	})
	return pool
}

func TestUpTwiceDownAndUpAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := emptyDatabase(t)

	v, err := migrations.Status(ctx, pool)
	if err != nil || v.Ordo != 0 || v.River != 0 || v.Current() {
		t.Fatalf("empty database: %+v %v", v, err)
	}
	for i := range 2 {
		if err := migrations.Up(ctx, pool); err != nil {
			t.Fatalf("up #%d: %v", i+1, err)
		}
	}
	v, err = migrations.Status(ctx, pool)
	if err != nil || !v.Current() || v.Ordo == 0 || v.River == 0 {
		t.Fatalf("after up: %+v %v", v, err)
	}
	var riverTable bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('river_job') IS NOT NULL`).Scan(&riverTable); err != nil || !riverTable {
		t.Fatalf("river_job table missing after up: %v", err)
	}

	if err := migrations.Down(ctx, pool, 0, true); err != nil {
		t.Fatalf("down: %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'ordo_schema_migrations'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d tables left after down --all (%v)", n, err)
	}
	if err := migrations.Up(ctx, pool); err != nil {
		t.Fatalf("up after down: %v", err)
	}
}

func TestConcurrentUpIsHarmless(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := emptyDatabase(t)
	errs := make(chan error, 3)
	for range 3 {
		go func() { errs <- migrations.Up(ctx, pool) }()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if v, _ := migrations.Status(ctx, pool); !v.Current() {
		t.Fatalf("not current after concurrent ups: %+v", v)
	}
}

// TestEverythingIsCommented: the schema explains itself in pgadmin.
func TestEverythingIsCommented(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t)
	rows, err := pool.Query(ctx, `
SELECT c.relname, NULL::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'p')
  AND c.relname NOT LIKE 'river%' AND c.relname <> 'ordo_schema_migrations'
  AND obj_description(c.oid, 'pg_class') IS NULL
UNION ALL
SELECT c.relname, a.attname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = 'public' AND c.relkind = 'r'
  AND c.relname NOT LIKE 'river%' AND c.relname <> 'ordo_schema_migrations'
  AND col_description(c.oid, a.attnum) IS NULL`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var table string
		var column *string
		if err := rows.Scan(&table, &column); err != nil {
			t.Fatal(err)
		}
		if column == nil {
			t.Errorf("table or view %s has no COMMENT ON", table)
		} else {
			t.Errorf("column %s.%s has no COMMENT ON", table, *column)
		}
	}
}

func TestFingerprintIsStable(t *testing.T) {
	t.Parallel()
	a, b := migrations.Fingerprint(), migrations.Fingerprint()
	if a != b || len(a) != 64 {
		t.Fatalf("fingerprint %q then %q", a, b)
	}
}
