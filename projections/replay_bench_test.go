package projections_test

import (
	"testing"

	"github.com/ordoflow/ordo/internal/bench"
	"github.com/ordoflow/ordo/internal/bench/benchtest"
)

// BenchmarkReplay is scenario 5 of `ordo bench` (internal/bench): a full
// replay of 1,000,000 events of synthetic ML pipeline runs, next to a plain
// sequential scan of the same events table. As a Go benchmark, to profile
// it:
//
//	make bench BENCH=BenchmarkReplay PKGS=./projections BENCHFLAGS=-cpuprofile=cpu.out
func BenchmarkReplay(b *testing.B) { benchtest.Run(b, "replay", bench.Options{}) }
