package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// runsSQL inserts $1 finished runs of a few deployments, numbered from
// $2 + 1, scheduled a minute apart going back from now, as the projector
// would leave them in flow_runs.
const runsSQL = `
INSERT INTO flow_runs (id, name, flow_name, deployment_id, deployment_name, deployment_version, work_queue, tags, parameters,
    state_type, state_name, state_timestamp, scheduled_at, started_at, ended_at, run_count, task_count, created_at, updated_at, stream_version)
SELECT gen_random_uuid(), 'bench-' || i, 'bench', ('00000000-0000-4000-8000-00000000000' || (i % 5))::uuid, 'bench-' || (i % 5), 1,
    CASE WHEN i % 2 = 0 THEN 'ml' ELSE 'default' END, ARRAY['bench', 'shard-' || (i % 10)], '{"table": "houses"}',
    s.type, initcap(s.type), t, t, t, t + interval '3 seconds', 1, 5, t, t, 6
FROM generate_series($2::int + 1, $2::int + $1::int) AS i,
     LATERAL (SELECT now() - i * interval '1 minute' AS t) AS ts,
     LATERAL (SELECT (ARRAY['COMPLETED', 'COMPLETED', 'COMPLETED', 'FAILED', 'CANCELLED'])[1 + i % 5] AS type) AS s`

// LoadRuns inserts n finished runs of five deployments (bench-0 to
// bench-4, tags bench and shard-0 to shard-9, queues ml and default)
// straight into the runs read model, 100,000 per statement, then vacuums
// and analyzes the table.
func LoadRuns(ctx context.Context, env Env, pool *pgxpool.Pool, n int) error {
	for done := 0; done < n; done += 100_000 {
		if _, err := pool.Exec(ctx, runsSQL, min(100_000, n-done), done); err != nil {
			return fmt.Errorf("insert runs: %w", err)
		}
		if inserted := min(done+100_000, n); inserted < n {
			env.logf("%s of %s runs inserted", count(inserted), count(n))
		}
	}
	// Vacuumed as well as analyzed, as a read model that has stood for a
	// while is: otherwise the first reads of each page write its hint bits,
	// and autovacuum visits the million new rows while they are measured.
	_, err := pool.Exec(ctx, `VACUUM (ANALYZE) flow_runs`)
	return err
}

// runsQueries are the filters the clients of scenario 6 take turns with.
var runsQueries = []string{
	"limit=50", "state=FAILED&limit=50", "deployment=bench-3&limit=50", "tag=shard-7&limit=50",
	"work_queue=ml&state=COMPLETED&limit=50", "deployment=bench-1&tag=shard-1&limit=50",
}

// rareQueries are filters that match no run: the pages a badly chosen plan
// would find by reading every run. Scenario 6 times them apart.
var rareQueries = []string{
	"tag=nobody&limit=50", "deployment=nobody&limit=50", "state=SCHEDULED&limit=50",
	"work_queue=nobody&limit=50", "tag=bench&tag=nobody&limit=50",
}

// Latencies is scenario 6's outcome: every request's latency in
// milliseconds, sorted, and the request rate.
type Latencies struct {
	Millis []float64
	PerSec float64
}

// RunsAPI sends GET /api/v1/runs with the filters of queries in turn to
// the server at baseURL, the given number of requests in all, from clients
// concurrent clients over HTTP.
func RunsAPI(ctx context.Context, baseURL string, queries []string, clients, requests int) (Latencies, error) {
	// A page is about 25 KiB: a read buffer that holds it reads it with
	// one system call rather than six, so the clients take less of the
	// machine they share with the server.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, ReadBufferSize: 64 << 10}}
	defer client.CloseIdleConnections()
	var (
		mu        sync.Mutex
		latencies []float64
		next      atomic.Int64
		firstErr  error
		wg        sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	began := time.Now()
	for range clients {
		wg.Go(func() {
			var mine []float64
			for i := next.Add(1); i <= int64(requests); i = next.Add(1) {
				t0 := time.Now()
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/api/v1/runs?"+queries[i%int64(len(queries))], nil)
				if err != nil {
					fail(err)
					return
				}
				resp, err := client.Do(req)
				if err != nil {
					fail(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					fail(fmt.Errorf("GET %s: status %d", req.URL, resp.StatusCode))
					return
				}
				mine = append(mine, float64(time.Since(t0).Microseconds())/1000)
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	took := time.Since(began)
	if firstErr != nil {
		return Latencies{}, firstErr
	}
	slices.Sort(latencies)
	return Latencies{Millis: latencies, PerSec: float64(len(latencies)) / took.Seconds()}, nil
}

func runsAPIScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	sz := opts.Sizes
	if opts.ServeAPI == nil {
		return nil, fmt.Errorf("no HTTP server to measure (Options.ServeAPI)")
	}
	url, err := env.newDatabase(ctx)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, err
	}
	env.logf("inserting %s finished runs", count(sz.APIRuns))
	err = LoadRuns(ctx, env, pool, sz.APIRuns)
	pool.Close()
	if err != nil {
		return nil, err
	}
	base, stop, err := opts.ServeAPI(ctx, url)
	if err != nil {
		return nil, err
	}
	defer stop()
	// Warm up: connections, prepared statements, the cache.
	if _, err := RunsAPI(ctx, base, runsQueries, sz.APIClients, 2*sz.APIClients); err != nil {
		return nil, err
	}
	// Rounds of requests on the same server: the round of the median p99
	// is reported, with the range of all.
	type round struct{ p50, p99, perSec float64 }
	var rounds []round
	for i := 1; i <= sz.Rounds; i++ {
		env.logf("round %d of %d: %s requests from %d clients", i, sz.Rounds, count(sz.APIRequests), sz.APIClients)
		l, err := RunsAPI(ctx, base, runsQueries, sz.APIClients, sz.APIRequests)
		if err != nil {
			return nil, err
		}
		rounds = append(rounds, round{percentile(l.Millis, 0.5), percentile(l.Millis, 0.99), l.PerSec})
	}
	slices.SortFunc(rounds, func(a, b round) int { return cmp.Compare(a.p99, b.p99) })
	r := rounds[len(rounds)/2]
	row := Row{
		What:   fmt.Sprintf("`GET /runs` with filters over %s runs, %d concurrent clients over HTTP", count(sz.APIRuns), sz.APIClients),
		Ordo:   fmt.Sprintf("p50 %s, p99 %s, %s req/s", millis(r.p50), millis(r.p99), count(r.perSec)),
		Target: "p99 ≤ 20 ms",
		Checks: []Check{atMost("p99 ms", r.p99, 20)},
		Metrics: map[string]float64{"p50_ms": r.p50, "p99_ms": r.p99, "req_per_s": r.perSec, "requests": float64(sz.APIRequests),
			"rounds": float64(len(rounds)), "p99_ms_min": rounds[0].p99, "p99_ms_max": rounds[len(rounds)-1].p99},
	}
	if len(rounds) > 1 {
		row.Note = fmt.Sprintf("median of %d rounds of %s requests; p99 %s to %s", len(rounds), count(sz.APIRequests),
			millis(rounds[0].p99), millis(rounds[len(rounds)-1].p99))
	}
	// Filters that match nothing, timed apart: without a target of their
	// own, they show that no filter walks the whole table.
	n := max(len(rareQueries), sz.APIRequests/10)
	env.logf("%s requests of filters that match no run", count(n))
	l, err := RunsAPI(ctx, base, rareQueries, sz.APIClients, n)
	if err != nil {
		return nil, err
	}
	p50, p99 := percentile(l.Millis, 0.5), percentile(l.Millis, 0.99)
	rare := Row{
		What:    fmt.Sprintf("`GET /runs` with filters that match no run of %s (absent tag, deployment, queue; a state no run is in), %d concurrent clients", count(sz.APIRuns), sz.APIClients),
		Ordo:    fmt.Sprintf("p50 %s, p99 %s, %s req/s", millis(p50), millis(p99), count(l.PerSec)),
		Metrics: map[string]float64{"p50_ms": p50, "p99_ms": p99, "req_per_s": l.PerSec, "requests": float64(n)},
	}
	return []Row{row, rare}, nil
}
