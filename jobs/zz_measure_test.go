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
	for _, mode := range []string{"warm", "cold", "true"} {
		cold := mode != "warm"
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{Python: python, DisableWarmPython: cold})
		file := pyFlow(t, "from ordo import task\n\n@task\ndef one():\n    return 1\n")
		var attempt, run []time.Duration
		for i := range 40 {
			task := pyTask("one", file, "one")
			if mode == "true" {
				task.Command = []string{"true"}
			}
			fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "py", Tasks: []domain.TaskSpec{task}}, nil).ID)
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
		t.Logf("%s task started->completed p50 %v p90 %v min %v; flow run started->ended p50 %v", mode, attempt[len(attempt)/2], attempt[len(attempt)*9/10], attempt[0], run[len(run)/2])
	}
}
