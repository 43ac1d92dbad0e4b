package eventstore_test

import (
	"testing"

	"github.com/ordoflow/ordo/internal/bench"
	"github.com/ordoflow/ordo/internal/bench/benchtest"
)

// BenchmarkAppend is scenario 4 of `ordo bench` (internal/bench): appends
// from 8 concurrent writers, one event or 100 events per transaction, next
// to pgbench inserting single rows with as many clients into the same
// database in the same run. As a Go benchmark, to profile it:
//
//	make bench BENCH=BenchmarkAppend PKGS=./eventstore BENCHFLAGS=-cpuprofile=cpu.out
func BenchmarkAppend(b *testing.B) { benchtest.Run(b, "append", bench.Options{}) }
