package jobs_test

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

func TestZZMeasureTrivial(t *testing.T) {
	if os.Getenv("MEASURE") == "" {
		t.Skip()
	}
	python := testPython(t)
	for _, cold := range []bool{false, true} {
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{Python: python, DisableWarmPython: cold})
		file := pyFlow(t, "def one():\n    return 1\n")
		var attempt, run []time.Duration
		for i := range 40 {
			fr := pyRun(t, b, file, "one")
			if fr.State.Type != domain.Completed {
				t.Fatal(fr.State)
			}
			if i < 3 {
				continue
			}
			h := b.taskEvents(t, fr, "one")
			var s, e time.Time
			for _, ev := range h.events {
				switch ev.Type {
				case "TaskRunStarted":
					s = ev.RecordedAt
				case "TaskRunCompleted":
					e = ev.RecordedAt
				}
			}
			attempt = append(attempt, e.Sub(s))
			run = append(run, fr.EndedAt.Sub(*fr.StartedAt))
		}
		slices.Sort(attempt)
		slices.Sort(run)
		t.Logf("cold=%v task started->completed p50 %v p90 %v min %v; flow run started->ended p50 %v", cold, attempt[len(attempt)/2], attempt[len(attempt)*9/10], attempt[0], run[len(run)/2])
	}
}
