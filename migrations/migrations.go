package migrations

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"sort"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

//go:embed sql/*.sql
var files embed.FS

// migrationsTable is where golang-migrate records Ordo's schema version.
const migrationsTable = "ordo_schema_migrations"

// lockKey serialises concurrent Up/Down calls from several processes (two
// servers starting at once) on one database.
const lockKey = 0x6f72646f // "ordo"

// Version describes what a database holds.
type Version struct {
	Ordo      uint // Ordo's schema version (0: none)
	Dirty     bool // a migration failed half-way and needs a human
	River     int  // River's schema version (0: none)
	Latest    uint // the newest Ordo version this binary knows
	LatestRvr int  // the newest River version this binary knows
}

// Current reports whether the database is exactly at this binary's versions.
func (v Version) Current() bool {
	return !v.Dirty && v.Ordo == v.Latest && v.River == v.LatestRvr
}

// Up installs River's tables and applies every pending Ordo migration. It is
// safe to call repeatedly and from several processes at once.
func Up(ctx context.Context, pool *pgxpool.Pool) error {
	return withLock(ctx, pool, func() error {
		rm, err := riverMigrator(pool)
		if err != nil {
			return err
		}
		if _, err := rm.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
			return fmt.Errorf("migrate river: %w", err)
		}
		m, closeFn, err := ordoMigrator(pool)
		if err != nil {
			return err
		}
		defer closeFn()
		if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
			return fmt.Errorf("migrate ordo: %w", err)
		}
		return nil
	})
}

// Down rolls back the newest steps Ordo migrations (all of them when steps
// is 0). With river it also removes River's tables once Ordo's are gone.
func Down(ctx context.Context, pool *pgxpool.Pool, steps int, river bool) error {
	return withLock(ctx, pool, func() error {
		m, closeFn, err := ordoMigrator(pool)
		if err != nil {
			return err
		}
		defer closeFn()
		if steps > 0 {
			err = m.Steps(-steps)
		} else {
			err = m.Down()
		}
		if err != nil && !errors.Is(err, migrate.ErrNoChange) {
			return fmt.Errorf("roll back ordo: %w", err)
		}
		if !river {
			return nil
		}
		rm, err := riverMigrator(pool)
		if err != nil {
			return err
		}
		if _, err := rm.Migrate(ctx, rivermigrate.DirectionDown, &rivermigrate.MigrateOpts{TargetVersion: -1}); err != nil {
			return fmt.Errorf("roll back river: %w", err)
		}
		return nil
	})
}

// Status reports the database's schema versions against this binary's.
func Status(ctx context.Context, pool *pgxpool.Pool) (Version, error) {
	v := Version{Latest: latestOrdo()}
	rm, err := riverMigrator(pool)
	if err != nil {
		return v, err
	}
	all := rm.AllVersions()
	v.LatestRvr = all[len(all)-1].Version
	existing, err := rm.ExistingVersions(ctx)
	if err != nil {
		return v, fmt.Errorf("read river version: %w", err)
	}
	if len(existing) > 0 {
		v.River = existing[len(existing)-1].Version
	}
	var version int64
	var dirty bool
	err = pool.QueryRow(ctx, `SELECT version, dirty FROM `+migrationsTable+` LIMIT 1`).Scan(&version, &dirty)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil && isUndefinedTable(err):
	case err != nil:
		return v, fmt.Errorf("read ordo version: %w", err)
	default:
		v.Ordo, v.Dirty = uint(version), dirty
	}
	return v, nil
}

// Fingerprint identifies the schema this binary installs: a hash of every
// embedded migration and of River's. Test harnesses name template databases
// after it.
func Fingerprint() string {
	h := sha256.New()
	names, _ := fs.Glob(files, "sql/*.sql")
	sort.Strings(names)
	for _, n := range names {
		b, _ := files.ReadFile(n)
		h.Write([]byte(n))
		h.Write(b)
	}
	if rm, err := rivermigrate.New(riverpgxv5.New(nil), nil); err == nil {
		for _, m := range rm.AllVersions() {
			h.Write([]byte(m.SQLUp))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func latestOrdo() uint {
	names, _ := fs.Glob(files, "sql/*.up.sql")
	var latest uint
	for _, n := range names {
		var v uint
		if _, err := fmt.Sscanf(n, "sql/%d_", &v); err == nil && v > latest {
			latest = v
		}
	}
	return latest
}

func riverMigrator(pool *pgxpool.Pool) (*rivermigrate.Migrator[pgx.Tx], error) {
	rm, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return nil, fmt.Errorf("river migrator: %w", err)
	}
	return rm, nil
}

func ordoMigrator(pool *pgxpool.Pool) (*migrate.Migrate, func(), error) {
	src, err := iofs.New(files, "sql")
	if err != nil {
		return nil, nil, fmt.Errorf("open embedded migrations: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	driver, err := migratepgx.WithInstance(db, &migratepgx.Config{MigrationsTable: migrationsTable})
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("migration driver: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", driver)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("migrator: %w", err)
	}
	return m, func() { _, _ = m.Close() }, nil
}

// withLock runs fn while holding a session advisory lock on one connection.
func withLock(ctx context.Context, pool *pgxpool.Pool, fn func() error) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockKey); err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockKey) //nolint:errcheck
	return fn()
}
