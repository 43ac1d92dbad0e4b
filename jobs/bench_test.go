package jobs_test

import (
	"testing"

	"github.com/ordoflow/ordo/internal/bench"
	"github.com/ordoflow/ordo/internal/bench/benchtest"
)

// The benchmarks of task execution are scenarios of `ordo bench`, defined
// in internal/bench; here they run as Go benchmarks, to profile them:
//
//	make bench BENCH=BenchmarkThroughput PKGS=./jobs BENCHFLAGS=-cpuprofile=cpu.out

// BenchmarkThroughput is scenario 1: no-op tasks per second in one run of
// 10,000 tasks and in 1,000 runs of 10, next to raw River working no-op
// jobs with the same worker settings, medians of 3 rounds.
func BenchmarkThroughput(b *testing.B) { benchtest.Run(b, "throughput", bench.Options{}) }

// BenchmarkStepLatency is scenario 2: the steps of 1,000-task chains of
// no-op tasks, from a task's handler returning to the next one's called.
func BenchmarkStepLatency(b *testing.B) { benchtest.Run(b, "step-latency", bench.Options{}) }

// BenchmarkCommandTasks is scenario 3: wall times of chains of command
// tasks (10 that sleep 0.5 s, 40 that exit at once).
func BenchmarkCommandTasks(b *testing.B) { benchtest.Run(b, "commands", bench.Options{}) }

// BenchmarkGrowth is scenario 9: scenario 1 with 0, 1,000,000 and
// 5,000,000 events already in the log.
func BenchmarkGrowth(b *testing.B) { benchtest.Run(b, "growth", bench.Options{}) }
