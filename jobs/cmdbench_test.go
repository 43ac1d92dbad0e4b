package jobs_test

import (
	"testing"

	"github.com/ordoflow/ordo/internal/bench"
	"github.com/ordoflow/ordo/internal/bench/benchtest"
)

// BenchmarkCommandThroughput is the command-throughput scenario: `true`
// command tasks per second (1 run of 2,000, 200 runs of 10) next to raw
// River jobs that run `true` with os/exec, 50 slots each, medians of the
// per-round ratios.
func BenchmarkCommandThroughput(b *testing.B) {
	benchtest.Run(b, "command-throughput", bench.Options{})
}
