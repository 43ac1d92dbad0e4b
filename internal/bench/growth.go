package bench

import (
	"context"
	"fmt"
	"strings"

	"github.com/ordoflow/ordo/internal/bench/loggen"
)

// growthScenario is scenario 9: scenario 1's two workloads on one database
// whose log grows between the steps (synthetic runs, loaded with COPY).
// Each round also measures the same workloads on a new database with an
// empty log, just before, so that a change of load on the machine between
// the steps does not pass for an effect of the log's size. The first step,
// before anything is loaded, is the control: its ratio is the method's
// noise, and it has no target.
func growthScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	sz := opts.Sizes
	grown, err := openOrdo(ctx, env)
	if err != nil {
		return nil, err
	}
	defer grown.Close()
	if err := grown.warmUp(ctx, sz); err != nil {
		return nil, err
	}
	gen := loggen.New()
	var rows []Row
	for _, n := range sz.GrowthEvents {
		if n > gen.Total {
			env.logf("loading synthetic events, up to %s", count(n))
			if err := gen.Load(ctx, grown.pool, n, env.loadProgress(n)); err != nil {
				return nil, err
			}
			if _, err := grown.pool.Exec(ctx, `VACUUM (ANALYZE) events`); err != nil {
				return nil, err
			}
		}
		var events int64
		if err := grown.pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&events); err != nil {
			return nil, err
		}
		var one, many, emptyOne, emptyMany []float64
		for round := 1; round <= sz.Rounds; round++ {
			env.logf("%s events in the log, and an empty log: 1 run of %s tasks, %s runs of %d (round %d of %d)",
				count(events), count(sz.OneRunTasks), count(sz.Runs), sz.RunTasks, round, sz.Rounds)
			x, y, err := emptyLogRound(ctx, env, sz)
			if err != nil {
				return nil, err
			}
			emptyOne, emptyMany = append(emptyOne, x), append(emptyMany, y)
			if x, err = grown.tasksPerSecond(ctx, 1, sz.OneRunTasks); err != nil {
				return nil, err
			}
			if y, err = grown.tasksPerSecond(ctx, sz.Runs, sz.RunTasks); err != nil {
				return nil, err
			}
			one, many = append(one, x), append(many, y)
		}
		for _, w := range []struct {
			what         string
			rounds, base []float64
		}{
			{fmt.Sprintf("1 run of %s tasks", count(sz.OneRunTasks)), one, emptyOne},
			{fmt.Sprintf("%s runs of %d tasks", count(sz.Runs), sz.RunTasks), many, emptyMany},
		} {
			got, base := median(w.rounds), median(w.base)
			env.logf("%s, %s events in the log: %s tasks/s; empty log: %s tasks/s", w.what, count(events), count(got), count(base))
			row := Row{
				What:     fmt.Sprintf("growth: no-op tasks, %s, with %s events in the log", w.what, count(events)),
				Ordo:     count(got) + " tasks/s",
				Baseline: "the same on a new database, its log empty, in the same rounds: " + count(base) + " tasks/s",
				Ratio:    ratio(got / base),
				Target:   "≥ 0.80 (falls by at most 20%)",
				Checks:   []Check{atLeast("ratio", got/base, 0.8)},
				Metrics:  map[string]float64{"tasks_per_s": got, "empty_log_tasks_per_s": base, "events_in_log": float64(events), "ratio": got / base},
				Note:     roundsNote(w.rounds, "tasks/s"),
			}
			if n == 0 {
				// Not a target: how far apart two nearly empty logs measure.
				row.What = fmt.Sprintf("growth control: no-op tasks, %s, on the database that grows, before it does (%s events in the log)", w.what, count(events))
				row.Target, row.Checks = "", nil
				row.Note = strings.TrimPrefix(row.Note+"; the method's noise: both logs are nearly empty", "; ")
			}
			rows = append(rows, row)
		}
	}
	return rows, nil
}

// emptyLogRound measures scenario 1's two workloads on a new database.
func emptyLogRound(ctx context.Context, env Env, sz Sizes) (one, many float64, err error) {
	o, err := openOrdo(ctx, env)
	if err != nil {
		return 0, 0, err
	}
	defer o.Close()
	if err := o.warmUp(ctx, sz); err != nil {
		return 0, 0, err
	}
	if one, err = o.tasksPerSecond(ctx, 1, sz.OneRunTasks); err != nil {
		return 0, 0, err
	}
	many, err = o.tasksPerSecond(ctx, sz.Runs, sz.RunTasks)
	return one, many, err
}

// warmUp works a small run first (connections, caches, plans), so that the
// measures after it are not of a cold database.
func (o *ordoDB) warmUp(ctx context.Context, sz Sizes) error {
	_, err := o.tasksPerSecond(ctx, 1, max(1, sz.OneRunTasks/10))
	return err
}
