package bench

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/bench/loggen"
	"github.com/ordoflow/ordo/projections"
)

// Replay is scenario 5: a full replay of a log of synthetic runs, next to a
// plain sequential scan of the same events table read by a client (every
// column, nothing decoded), on the same database, both from memory.
type Replay struct {
	Events   int64
	Rate     float64 // events per second rebuilding every read model
	Took     time.Duration
	ScanRate float64 // events per second of the plain scan
	// The CPU time the replay took: ordo's (this process's) and
	// PostgreSQL's, when its processes are visible here (else 0).
	OrdoCPU, ServerCPU time.Duration
}

// MeasureReplay loads a log of at least events events into a new database
// and measures, rounds times over, a scan of it and a replay of it: each
// round's two figures are taken one right after the other, in alternating
// order and from the same warm cache, so that their ratio is fair on a
// machine whose speed changes from minute to minute.
func MeasureReplay(ctx context.Context, env Env, events, rounds int) ([]Replay, error) {
	pool, err := newPool(ctx, env)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	store := eventstore.New(pool, domain.NewRegistry())
	defer store.Close()
	gen := loggen.New()
	env.logf("loading %s events of synthetic runs", count(events))
	if err := gen.Load(ctx, pool, events, env.loadProgress(events)); err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, `VACUUM (ANALYZE) events`); err != nil {
		return nil, err
	}
	server := newServerCPU(ctx, pool)
	var out []Replay
	for round := 1; round <= rounds; round++ {
		of := fmt.Sprintf("round %d of %d", round, rounds)
		var (
			scan           float64
			res            projections.ReplayResult
			ordoCPU, pgCPU time.Duration
		)
		measureScan := func() (err error) {
			env.logf("%s: scanning the events table", of)
			scan, err = scanRate(ctx, pool)
			return err
		}
		measureReplay := func() (err error) {
			env.logf("%s: replaying %s events", of, count(gen.Total))
			last := ""
			ordo0, pg0 := cpuTime(), server.used()
			res, err = projections.Replay(ctx, pool, store, projections.ReplayOptions{Logger: quiet, Progress: func(p projections.ReplayProgress) {
				if p.Phase != last {
					env.logf("%s: replay: %s at %s", of, p.Phase, p.Elapsed.Round(time.Millisecond))
					last = p.Phase
				}
			}})
			ordoCPU, pgCPU = cpuTime()-ordo0, server.used()-pg0
			if err == nil && res.Events != int64(gen.Total) {
				err = fmt.Errorf("replayed %d events, the log has %d", res.Events, gen.Total)
			}
			if err == nil {
				// The new tables are vacuumed now, outside the measures, so
				// that autovacuum does not do it during the next one.
				_, err = pool.Exec(ctx, `VACUUM deployments, flow_runs, task_runs, task_run_attempts, state_history`)
			}
			return err
		}
		// Scan first in odd rounds and replay first in even ones, each
		// right after a scan that brings the events into memory, so that
		// both read the same warm cache whatever the other left behind.
		steps := []func() error{measureScan, measureReplay}
		if round%2 == 0 {
			steps = []func() error{measureReplay, measureScan}
		}
		for _, step := range steps {
			if _, err := scanRate(ctx, pool); err != nil {
				return nil, err
			}
			if err := step(); err != nil {
				return nil, err
			}
		}
		out = append(out, Replay{Events: res.Events, Rate: res.Rate(), Took: res.Duration, ScanRate: scan, OrdoCPU: ordoCPU, ServerCPU: pgCPU})
	}
	return out, nil
}

func replayScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	rounds, err := MeasureReplay(ctx, env, opts.Sizes.ReplayEvents, opts.Sizes.Rounds)
	if err != nil {
		return nil, err
	}
	// The round of the median ratio is reported, with the range of all.
	slices.SortFunc(rounds, func(a, b Replay) int { return cmp.Compare(a.Rate/a.ScanRate, b.Rate/b.ScanRate) })
	r := rounds[len(rounds)/2]
	row := Row{
		What:     fmt.Sprintf("replay, %s events, every read model", count(r.Events)),
		Ordo:     fmt.Sprintf("%s events/s (%s)", count(r.Rate), r.Took.Round(100*time.Millisecond)),
		Baseline: "plain sequential scan of `events`: " + count(r.ScanRate) + " events/s",
		Ratio:    ratio(r.Rate / r.ScanRate),
		Target:   "≥ 0.25 of the scan",
		Checks:   []Check{atLeast("ratio", r.Rate/r.ScanRate, 0.25)},
		Metrics: map[string]float64{"events": float64(r.Events), "events_per_s": r.Rate, "seconds": r.Took.Seconds(), "scan_events_per_s": r.ScanRate,
			"ratio": r.Rate / r.ScanRate, "rounds": float64(len(rounds)),
			"ratio_min": rounds[0].Rate / rounds[0].ScanRate, "ratio_max": rounds[len(rounds)-1].Rate / rounds[len(rounds)-1].ScanRate},
	}
	if len(rounds) > 1 {
		row.Note = fmt.Sprintf("median of %d rounds, each a scan and a replay in alternating order; ratios %s to %s",
			len(rounds), fmt.Sprintf("%.2f", row.Metrics["ratio_min"]), fmt.Sprintf("%.2f", row.Metrics["ratio_max"]))
	}
	// Where the time goes: a replay keeps every core busy, so what it
	// costs is CPU, PostgreSQL's (reading the log, COPY, index builds)
	// and ordo's (decoding and folding).
	if r.ServerCPU > 0 {
		row.Metrics["ordo_cpu_s"], row.Metrics["server_cpu_s"] = r.OrdoCPU.Seconds(), r.ServerCPU.Seconds()
		if row.Note != "" {
			row.Note += "; "
		}
		row.Note += fmt.Sprintf("CPU time of that replay: PostgreSQL %.1f s, ordo %.1f s, on %d CPUs", r.ServerCPU.Seconds(), r.OrdoCPU.Seconds(), runtime.NumCPU())
	}
	return []Row{row}, nil
}

// scanRate reads every column of every event to the client, undecoded,
// and returns events per second.
func scanRate(ctx context.Context, pool *pgxpool.Pool) (float64, error) {
	start := time.Now()
	rows, err := pool.Query(ctx, `SELECT position, transaction_id, stream_id, stream_type, version, type, data, metadata, recorded_at FROM events`)
	if err != nil {
		return 0, err
	}
	n, size := 0, 0
	for rows.Next() {
		for _, v := range rows.RawValues() {
			size += len(v)
		}
		n++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
