package eventstore_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// benchClients is the client count of the append benchmarks and of their
// pgbench baseline.
const benchClients = 8

// BenchmarkAppend measures appends with benchClients concurrent writers, one
// event or 100 events per transaction (each its own implicit transaction,
// like pgbench's), next to pgbench inserting single rows with as many
// clients into the same database in the same run.
//
//	make bench BENCH=BenchmarkAppend PKGS=./eventstore BENCHFLAGS=-benchtime=5s
func BenchmarkAppend(b *testing.B) {
	url := pgtest.URL(b)
	pool, err := pgxpool.New(context.Background(), url+"&pool_max_conns="+strconv.Itoa(benchClients+2))
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	store := eventstore.New(pool, domain.NewRegistry())
	defer store.Close()

	for _, perTx := range []int{1, 100} {
		b.Run(fmt.Sprintf("EventsPerTx=%d", perTx), func(b *testing.B) {
			baseline := pgbenchInsertRate(b, url, benchClients, 5*time.Second, plainInsert)
			sameTable := pgbenchInsertRate(b, url, benchClients, 5*time.Second, eventsInsert)
			events := make([]domain.Event, perTx)
			for i := range events {
				events[i] = domain.TaskRunStarted{Attempt: 1, Worker: "bench"}
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range benchClients {
				wg.Go(func() {
					ctx := context.Background()
					for next.Add(1) <= int64(b.N) {
						_, err := store.AppendAlone(ctx, eventstore.Append{StreamID: uuid.Must(uuid.NewV7()), Events: events})
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			txPerSec := float64(b.N) / elapsed.Seconds()
			b.ReportMetric(txPerSec*float64(perTx), "events/s")
			b.ReportMetric(txPerSec, "tx/s")
			b.ReportMetric(baseline, "pgbench-tx/s")
			b.ReportMetric(txPerSec/baseline, "ratio-tx")
			b.ReportMetric(sameTable, "pgbench-events-tx/s")
			b.ReportMetric(txPerSec/sameTable, "ratio-events-tx")
		})
	}
}

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+)`)

// The two pgbench baselines: a single-row insert into a plain table with a
// jsonb payload and one index, and the same event row inserted straight
// into the events table (its three indexes, no version check).
const (
	plainInsert  = `INSERT INTO pgbench_rows (payload) VALUES ('{"attempt": 1, "worker": "bench"}');`
	eventsInsert = `INSERT INTO events (stream_id, stream_type, version, type, data) VALUES (gen_random_uuid(), 'task_run', 1, 'TaskRunStarted', '{"attempt": 1, "worker": "bench"}');`
)

// pgbenchInsertRate runs pgbench with the single-row INSERT transaction
// sql and returns its transactions per second.
func pgbenchInsertRate(b *testing.B, url string, clients int, d time.Duration, sql string) float64 {
	b.Helper()
	bin, err := exec.LookPath("pgbench")
	if err != nil {
		for _, p := range []string{"/usr/lib/postgresql/16/bin/pgbench", "/usr/lib/postgresql/15/bin/pgbench"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		b.Skip("pgbench not found: the baseline cannot be measured")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS pgbench_rows (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload jsonb NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	script := b.TempDir() + "/insert.sql"
	if err := os.WriteFile(script, []byte(sql+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	out, err := exec.Command(bin, "-n", "-f", script, "-c", strconv.Itoa(clients), "-j", "2",
		"-T", strconv.Itoa(int(d.Seconds())), url).CombinedOutput()
	if err != nil {
		b.Fatalf("pgbench: %v\n%s", err, out)
	}
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		b.Fatalf("no tps in pgbench output:\n%s", out)
	}
	tps, _ := strconv.ParseFloat(string(m[1]), 64)
	return tps
}
