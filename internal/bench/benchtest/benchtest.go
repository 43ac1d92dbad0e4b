// Package benchtest runs Ordo's benchmark scenarios (internal/bench) as Go
// benchmarks, each measure on a database of its own from internal/pgtest,
// so that a scenario can be profiled with go test's -cpuprofile:
//
//	make bench BENCH=BenchmarkThroughput PKGS=./jobs BENCHFLAGS=-cpuprofile=cpu.out
//
// Scenarios run at full size; -short runs them at `ordo bench --quick`'s.
// Test plumbing: it must only be imported by tests.
package benchtest

import (
	"context"
	"slices"
	"testing"

	"github.com/ordoflow/ordo/internal/bench"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// Env returns an Env whose databases are clones of pgtest's template,
// dropped when the benchmark ends, and whose progress goes to b.Log.
func Env(b *testing.B) bench.Env {
	b.Helper()
	return bench.Env{
		NewDatabase: func(context.Context) (string, error) { return pgtest.URL(b), nil },
		TempDir:     b.TempDir(),
		Progress:    func(line string) { b.Log(line) },
	}
}

// Sizes are the full sizes, or the quick ones under -short.
func Sizes() bench.Sizes {
	if testing.Short() {
		return bench.QuickSizes()
	}
	return bench.FullSizes()
}

// Run runs the named scenario b.N times with opts (Sizes() when
// opts.Sizes is zero) and reports the metrics of its rows, averaged over
// the iterations: one metric per row and figure, named after the row's
// position when the scenario has several rows.
func Run(b *testing.B, name string, opts bench.Options) {
	b.Helper()
	if opts.Sizes.Rounds == 0 {
		opts.Sizes = Sizes()
	}
	sums := map[string]float64{}
	b.ResetTimer()
	for range b.N {
		rows, err := bench.RunScenario(b.Context(), Env(b), opts, name)
		if err != nil {
			b.Fatal(err)
		}
		for i, r := range rows {
			line := r.What + ": " + r.Ordo
			if r.Baseline != "" {
				line += "; baseline: " + r.Baseline
			}
			if r.Note != "" {
				line += "; " + r.Note
			}
			b.Log(line)
			for k, v := range r.Metrics {
				if len(rows) > 1 {
					k = string(rune('a'+i)) + "_" + k
				}
				sums[k] += v
			}
		}
	}
	keys := make([]string, 0, len(sums))
	for k := range sums {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b.ReportMetric(sums[k]/float64(b.N), k)
	}
}
