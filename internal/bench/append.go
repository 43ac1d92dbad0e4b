package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// The two pgbench baselines: a single-row insert into a plain table with a
// jsonb payload and one index, and the same event row inserted straight
// into the events table (its three indexes, no version check).
const (
	plainTable   = `CREATE TABLE IF NOT EXISTS pgbench_rows (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload jsonb NOT NULL)`
	plainInsert  = `INSERT INTO pgbench_rows (payload) VALUES ('{"attempt": 1, "worker": "bench"}');`
	eventsInsert = `INSERT INTO events (stream_id, stream_type, version, type, data) VALUES (gen_random_uuid(), 'task_run', 1, 'TaskRunStarted', '{"attempt": 1, "worker": "bench"}');`
)

// ErrNoPgbench says that the pgbench baseline cannot be measured.
var ErrNoPgbench = errors.New("pgbench not found (on PATH or in /usr/lib/postgresql/*/bin)")

// Append is scenario 4: concurrent appenders, each append its own
// transaction (like pgbench's), next to pgbench inserting single rows with
// as many clients into the same database in the same run.
type Append struct {
	EventsPerTx  int
	EventsPerSec float64
	TxPerSec     float64
}

// Pgbench is the baseline of scenario 4, in transactions (single-row
// inserts) per second. Err is set when pgbench could not run.
type Pgbench struct {
	Plain, Events float64
	Err           error
}

// AppendRate appends for d from clients goroutines, perTx events in each
// transaction, and returns the rates.
func AppendRate(ctx context.Context, store *eventstore.Store, clients, perTx int, d time.Duration) (Append, error) {
	events := make([]domain.Event, perTx)
	for i := range events {
		events[i] = domain.TaskRunStarted{Attempt: 1, Worker: "bench"}
	}
	var (
		txs      atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	start := time.Now()
	deadline := start.Add(d)
	for range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if _, err := store.AppendAlone(ctx, eventstore.Append{StreamID: uuid.Must(uuid.NewV7()), Events: events}); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				txs.Add(1)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return Append{}, fmt.Errorf("append: %w", firstErr)
	}
	tps := float64(txs.Load()) / time.Since(start).Seconds()
	return Append{EventsPerTx: perTx, TxPerSec: tps, EventsPerSec: tps * float64(perTx)}, nil
}

// MeasurePgbench runs pgbench's two single-row insert baselines on the
// database at url.
func MeasurePgbench(ctx context.Context, env Env, pool *pgxpool.Pool, url string, clients int, d time.Duration) Pgbench {
	bin, err := pgbenchPath()
	if err != nil {
		return Pgbench{Err: err}
	}
	if _, err := pool.Exec(ctx, plainTable); err != nil {
		return Pgbench{Err: err}
	}
	var p Pgbench
	env.logf("pgbench, single-row inserts into a plain table, %d clients, %s", clients, d)
	if p.Plain, err = pgbenchRate(ctx, env, bin, url, clients, d, plainInsert); err != nil {
		return Pgbench{Err: err}
	}
	env.logf("pgbench, single-row inserts into events, %d clients, %s", clients, d)
	if p.Events, err = pgbenchRate(ctx, env, bin, url, clients, d, eventsInsert); err != nil {
		return Pgbench{Err: err}
	}
	return p
}

func pgbenchPath() (string, error) {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
	if len(matches) == 0 {
		return "", ErrNoPgbench
	}
	return matches[len(matches)-1], nil
}

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+)`)

// pgbenchRate runs pgbench with the single-row INSERT transaction sql and
// returns its transactions per second.
func pgbenchRate(ctx context.Context, env Env, bin, url string, clients int, d time.Duration, sql string) (float64, error) {
	script, err := os.CreateTemp(env.TempDir, "pgbench-*.sql")
	if err != nil {
		return 0, err
	}
	defer os.Remove(script.Name())
	if _, err := script.WriteString(sql + "\n"); err != nil {
		return 0, err
	}
	script.Close()
	out, err := exec.CommandContext(ctx, bin, "-n", "-f", script.Name(), "-c", strconv.Itoa(clients), "-j", "2",
		"-T", strconv.Itoa(max(1, int(d.Seconds()))), url).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench: %v\n%s", err, out)
	}
	m := tpsLine.FindSubmatch(out)
	switch {
	case m == nil && bytes.Contains(out, []byte("actually processed: 0")):
		return 0, fmt.Errorf("pgbench committed no transaction in %s: the machine was too busy to measure", d)
	case m == nil:
		return 0, fmt.Errorf("no tps in pgbench output:\n%s", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

func appendScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	sz := opts.Sizes
	url, err := env.newDatabase(ctx)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = int32(sz.AppendClients + 2)
	eventstore.ConfigurePool(cfg)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	store := eventstore.New(pool, domain.NewRegistry())
	defer store.Close()

	base := MeasurePgbench(ctx, env, pool, url, sz.AppendClients, sz.AppendTime)
	var rows []Row
	for _, perTx := range []int{1, 100} {
		env.logf("Ordo, %d per transaction, %d clients, %s", perTx, sz.AppendClients, sz.AppendTime)
		a, err := AppendRate(ctx, store, sz.AppendClients, perTx, sz.AppendTime)
		if err != nil {
			return nil, err
		}
		row := Row{
			What:    fmt.Sprintf("event append, %d events per transaction, %d clients", perTx, sz.AppendClients),
			Ordo:    count(a.EventsPerSec) + " events/s",
			Metrics: map[string]float64{"events_per_s": a.EventsPerSec, "tx_per_s": a.TxPerSec},
		}
		if perTx == 1 {
			row.What = fmt.Sprintf("event append, 1 event per transaction, %d clients", sz.AppendClients)
		}
		if base.Err != nil {
			row.Baseline = "not measured: " + base.Err.Error()
		} else {
			row.Baseline = fmt.Sprintf("pgbench single-row inserts, same clients: into `events` %s tx/s; into a plain one-index table %s tx/s",
				count(base.Events), count(base.Plain))
			row.Ratio = ratio(a.EventsPerSec / base.Events)
			row.Metrics["pgbench_events_tx_per_s"] = base.Events
			row.Metrics["pgbench_plain_tx_per_s"] = base.Plain
			row.Metrics["ratio"] = a.EventsPerSec / base.Events
			row.Metrics["ratio_plain"] = a.EventsPerSec / base.Plain
			row.Note = fmt.Sprintf("ratio to the plain table: %.2f", a.EventsPerSec/base.Plain)
		}
		if perTx == 1 {
			row.Target = "≥ 0.90 of pgbench into `events`"
			if row.Ratio != nil {
				row.Checks = []Check{atLeast("ratio", *row.Ratio, 0.9)}
			}
		} else {
			row.Target = "≥ 50,000 events/s"
			row.Checks = []Check{atLeast("events/s", a.EventsPerSec, 50_000)}
		}
		rows = append(rows, row)
	}
	return rows, nil
}
