package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/migrations"
)

// Databases makes the scratch databases of a run of `ordo bench` on one
// server: a template migrated once, then a clone of it for each measure,
// all named ordo_bench_RUN_*, and all dropped by Drop and Close. The user
// of the URL must be allowed to create databases.
type Databases struct {
	base     *url.URL
	admin    *pgxpool.Pool
	prefix   string
	template string
	mu       sync.Mutex
	made     []string
	n        int
	version  string
}

// OpenDatabases connects to the server of the URL (a postgres:// URL) and
// creates the migrated template.
func OpenDatabases(ctx context.Context, rawURL string) (*Databases, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, errors.New("the database URL must be a postgres:// URL")
	}
	admin, err := pgxpool.New(ctx, rawURL)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	d := &Databases{base: u, admin: admin, prefix: "ordo_bench_" + hex.EncodeToString(b[:])}
	if err := admin.QueryRow(ctx, `SELECT 'PostgreSQL ' || current_setting('server_version') ||
		CASE WHEN current_setting('fsync') = 'on' AND current_setting('synchronous_commit') = 'on' THEN ', fsync and synchronous commit on' ELSE ', fsync or synchronous commit off' END`).Scan(&d.version); err != nil {
		admin.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	d.template = d.prefix + "_template"
	if err := d.create(ctx, d.template, ""); err != nil {
		admin.Close()
		return nil, err
	}
	pool, err := pgxpool.New(ctx, d.url(d.template))
	if err != nil {
		return nil, errors.Join(err, d.Close(ctx))
	}
	err = migrations.Up(ctx, pool)
	pool.Close()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("migrate the template: %w", err), d.Close(ctx))
	}
	return d, nil
}

// Server describes the server: its version and durability settings.
func (d *Databases) Server() string { return d.version }

// New returns the URL of a new clone of the template.
func (d *Databases) New(ctx context.Context) (string, error) {
	d.mu.Lock()
	d.n++
	name := fmt.Sprintf("%s_%d", d.prefix, d.n)
	d.mu.Unlock()
	if err := d.create(ctx, name, d.template); err != nil {
		return "", err
	}
	return d.url(name), nil
}

func (d *Databases) create(ctx context.Context, name, template string) error {
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if _, err := d.admin.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	d.mu.Lock()
	d.made = append(d.made, name)
	d.mu.Unlock()
	return nil
}

func (d *Databases) url(name string) string {
	u := *d.base
	u.Path, u.RawPath = "/"+name, ""
	return u.String()
}

// Drop drops the clones made so far, keeping the template.
func (d *Databases) Drop(ctx context.Context) error {
	return d.drop(ctx, false)
}

// Close drops every database made, the template too.
func (d *Databases) Close(ctx context.Context) error {
	err := d.drop(ctx, true)
	d.admin.Close()
	return err
}

func (d *Databases) drop(ctx context.Context, template bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	kept := d.made[:0]
	for _, name := range d.made {
		if name == d.template && !template {
			kept = append(kept, name)
			continue
		}
		if _, err := d.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			errs = append(errs, fmt.Errorf("drop database %s: %w", name, err))
		}
	}
	d.made = kept
	return errors.Join(errs...)
}
