package chaos

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
)

// TestChecksFindFaults shows that the checks the chaos tests end with fail
// on the faults they look for: a log with a doubled, lost or invented
// completion, a schedule with a doubled or missing time, executions at the
// same time.
func TestChecksFindFaults(t *testing.T) {
	t.Parallel()
	started := func(n int) domain.Event { return domain.TaskRunStarted{Attempt: n, Worker: "w1"} }
	completed := func(n, result int) domain.Event {
		return domain.TaskRunCompleted{Attempt: n, Result: json.RawMessage(fmt.Sprintf(`{"attempt": %d}`, result))}
	}
	crashed := func(n int) domain.Event {
		return domain.TaskRunRetryScheduled{AttemptFailure: domain.AttemptFailure{Attempt: n, Crashed: true}}
	}
	for _, tc := range []struct {
		name   string
		events []domain.Event
		ran    []int // attempts in the ledger
		want   string
	}{
		{"Clean", []domain.Event{started(1), completed(1, 1)}, []int{1}, ""},
		{"CrashedThenCompleted", []domain.Event{started(1), crashed(1), started(2), completed(2, 2)}, []int{2}, ""},
		{"CompletedTwice", []domain.Event{started(1), completed(1, 1), completed(1, 1)}, []int{1}, "started 1 times, 2 outcomes"},
		{"CompletionLost", []domain.Event{started(1)}, []int{1}, "terminal events []"},
		{"StartedTwice", []domain.Event{started(1), started(1), completed(1, 1)}, []int{1}, "started 2 times"},
		{"OutcomeWithoutStart", []domain.Event{started(1), crashed(1), completed(2, 2)}, []int{2}, "an outcome without a start"},
		{"CompletionNoProcessMade", []domain.Event{started(1), completed(1, 1)}, nil, "no task process of that attempt ran"},
		{"ResultOfAnotherAttempt", []domain.Event{started(1), crashed(1), started(2), completed(2, 1)}, []int{1, 2}, `with result {"attempt":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run, task := uuid.New(), uuid.New()
			l := &runLog{streams: map[uuid.UUID][]domain.Envelope{}, flowRuns: map[uuid.UUID]domain.FlowRunCreated{
				run: {TaskRunIDs: map[string]uuid.UUID{"t": task}},
			}}
			l.streams[run] = []domain.Envelope{{Type: "FlowRunCompleted", Event: domain.FlowRunCompleted{}}}
			for _, e := range tc.events {
				l.streams[task] = append(l.streams[task], domain.Envelope{Type: e.EventType(), Event: e})
			}
			var ledger []execution
			for _, a := range tc.ran {
				ledger = append(ledger, execution{taskRun: task, attempt: a})
			}
			_, problems := l.exactlyOnce([]uuid.UUID{run}, ledger)
			got := strings.Join(problems, "\n")
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Fatalf("problems %q, want %q", got, tc.want)
			}
		})
	}

	t.Run("ScheduleDoubledAndMissing", func(t *testing.T) {
		at := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
		byTick := map[time.Time][]uuid.UUID{
			at:                      {uuid.New()},
			at.Add(time.Second):     {uuid.New(), uuid.New()},
			at.Add(3 * time.Second): {uuid.New()},
		}
		got := strings.Join(gridProblems(byTick, time.Second), "\n")
		if !strings.Contains(got, "10:00:01Z has 2 runs") || !strings.Contains(got, "2s between runs at 2026-01-01T10:00:01Z and 2026-01-01T10:00:03Z") {
			t.Fatalf("problems %q", got)
		}
		delete(byTick, at.Add(3*time.Second))
		byTick[at.Add(time.Second)] = byTick[at.Add(time.Second)][:1]
		if p := gridProblems(byTick, time.Second); len(p) != 0 {
			t.Fatalf("a clean grid: %q", p)
		}
	})

	t.Run("Overlap", func(t *testing.T) {
		at := func(s int) time.Time { return time.Unix(int64(s), 0) }
		execs := []execution{{start: at(0), end: at(2)}, {start: at(1), end: at(3)}, {start: at(2), end: at(4)}, {start: at(10), end: at(11)}}
		if got := overlap(execs); got != 2 {
			t.Fatalf("overlap %d, want 2 (an execution that ends when another starts does not overlap it)", got)
		}
		if got := overlap(append(execs, execution{start: at(1), end: at(2)})); got != 3 {
			t.Fatalf("overlap %d, want 3", got)
		}
	})
}
