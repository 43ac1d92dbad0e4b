package main

import (
	"testing"
	"time"

	"github.com/ordoflow/ordo/client"
	"github.com/ordoflow/ordo/domain"
)

// TestWatchProgress: the line `ordo run --watch` prints says what a
// SCHEDULED run waits for and counts its task runs by state.
func TestWatchProgress(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 6, 16, 0, 0, 0, time.Local)
	tasks := func(states ...domain.StateType) []client.TaskRun {
		var out []client.TaskRun
		for _, s := range states {
			out = append(out, client.TaskRun{State: client.State{Type: client.StateType(s)}})
		}
		return out
	}
	tests := []struct {
		name string
		run  client.FlowRun
		want string
	}{
		{"due, no worker yet",
			client.FlowRun{State: client.State{Type: client.StateType(domain.Scheduled), Name: "Scheduled"}, WorkQueue: "ml", ScheduledAt: now.Add(-time.Second),
				TaskRuns: tasks(domain.Pending, domain.Pending, domain.Pending, domain.Pending)},
			"  run SCHEDULED, due: waiting for a worker on queue ml: 0/4 task runs finished (4 PENDING)"},
		{"late",
			client.FlowRun{State: client.State{Type: client.StateType(domain.Scheduled), Name: "Late"}, WorkQueue: "ml", ScheduledAt: now.Add(-time.Minute),
				TaskRuns: tasks(domain.Pending, domain.Pending)},
			"  run SCHEDULED (Late), due: waiting for a worker on queue ml: 0/2 task runs finished (2 PENDING)"},
		{"ahead",
			client.FlowRun{State: client.State{Type: client.StateType(domain.Scheduled)}, WorkQueue: "ml", ScheduledAt: now.Add(time.Hour),
				TaskRuns: tasks(domain.Pending)},
			"  run SCHEDULED, due at 17:00:00: 0/1 task runs finished (1 PENDING)"},
		{"running",
			client.FlowRun{State: client.State{Type: client.StateType(domain.Running), Name: "Running"}, WorkQueue: "ml", ScheduledAt: now.Add(-time.Minute),
				TaskRuns: tasks(domain.Completed, domain.Running, domain.Pending, domain.Running, domain.Failed)},
			"  run RUNNING: 2/5 task runs finished (1 PENDING, 2 RUNNING, 1 COMPLETED, 1 FAILED)"},
	}
	for _, tt := range tests {
		if got := watchProgress(tt.run, now); got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, got, tt.want)
		}
	}
}
