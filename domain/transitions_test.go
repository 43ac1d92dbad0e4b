package domain_test

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
)

// logBuilder appends decided events as envelopes, the way the event store
// would, so the validator can replay them.
type logBuilder struct {
	envs     []domain.Envelope
	versions map[uuid.UUID]int64
	clock    time.Time
}

func newLog() *logBuilder {
	return &logBuilder{versions: map[uuid.UUID]int64{}, clock: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (l *logBuilder) add(stream uuid.UUID, events ...domain.Event) []domain.Envelope {
	var out []domain.Envelope
	for _, e := range events {
		l.versions[stream]++
		l.clock = l.clock.Add(time.Second)
		data, _ := json.Marshal(e)
		env := domain.Envelope{
			Position: int64(len(l.envs) + 1), StreamID: stream, StreamType: e.StreamType(),
			Version: l.versions[stream], Type: e.EventType(), Data: data, RecordedAt: l.clock, Event: e,
		}
		l.envs = append(l.envs, env)
		out = append(out, env)
	}
	return out
}

func foldTaskRun(id uuid.UUID, envs []domain.Envelope) domain.TaskRun {
	t := domain.TaskRun{ID: id}
	for _, e := range envs {
		if e.StreamID == id {
			t = t.Apply(e.Event, e.RecordedAt)
			t.Version = e.Version
		}
	}
	return t
}

func foldFlowRun(id uuid.UUID, envs []domain.Envelope) domain.FlowRun {
	r := domain.FlowRun{ID: id}
	for _, e := range envs {
		if e.StreamID == id {
			r = r.Apply(e.Event, e.RecordedAt)
			r.Version = e.Version
		}
	}
	return r
}

func randomTaskCommand(rng *rand.Rand, t domain.TaskRun, now time.Time) domain.TaskRunCommand {
	attempt := t.Attempt + rng.IntN(3) - 1 // sometimes stale, sometimes ahead
	switch rng.IntN(7) {
	case 0, 1:
		return domain.StartTaskRun{Attempt: t.Attempt + 1 - rng.IntN(2)}
	case 2:
		return domain.CompleteTaskRun{Attempt: attempt, Result: json.RawMessage(`{"ok":true}`)}
	case 3:
		return domain.FailTaskRun{AttemptFailure: domain.AttemptFailure{Attempt: attempt, Error: "boom", TimedOut: rng.IntN(3) == 0, Crashed: rng.IntN(4) == 0, Interrupted: rng.IntN(6) == 0}, Now: now, Random: rng.Float64()}
	case 4:
		return domain.UseCachedResult{Result: json.RawMessage(`1`), CacheKey: "k", SourceTaskRunID: uuid.New()}
	case 5:
		return domain.CancelTaskRun{NotRun: rng.IntN(2) == 0}
	default:
		return domain.ResetTaskRun{}
	}
}

// TestRandomTaskRunCommandsStayLegal: whatever commands arrive, in whatever
// order, the events decided are legal transitions, and folding the log
// reproduces the state each decision was made on.
func TestRandomTaskRunCommandsStayLegal(t *testing.T) {
	t.Parallel()
	reg := domain.NewRegistry()
	for seed := range uint64(2000) {
		rng := rand.New(rand.NewPCG(seed, 1))
		log := newLog()
		id := uuid.New()
		spec := domain.TaskSpec{Name: "t", Command: []string{"true"}, Retries: rng.IntN(4), RetryDelaySeconds: domain.RetryDelays{1}}
		log.add(id, domain.TaskRunCreated{FlowRunID: uuid.New(), Task: spec})
		state := foldTaskRun(id, log.envs)
		for range 40 {
			cmd := randomTaskCommand(rng, state, log.clock)
			events, err := domain.DecideTaskRun(state, cmd)
			if err != nil {
				var de *domain.Error
				if !errors.As(err, &de) || de.Code != domain.CodeConflict {
					t.Fatalf("seed %d: %T: untyped or unexpected error %v", seed, cmd, err)
				}
				continue
			}
			for _, env := range log.add(id, events...) {
				state = state.Apply(env.Event, env.RecordedAt)
				state.Version = env.Version
			}
			if folded := foldTaskRun(id, log.envs); !reflect.DeepEqual(folded, state) {
				t.Fatalf("seed %d: folding the log gives %+v, deciding saw %+v", seed, folded, state)
			}
		}
		if err := domain.ValidateLog(reg, log.envs); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

func TestRandomFlowRunCommandsStayLegal(t *testing.T) {
	t.Parallel()
	reg := domain.NewRegistry()
	outcomes := []domain.StateType{domain.Completed, domain.Failed, domain.Crashed, domain.Cancelled, domain.Running}
	for seed := range uint64(2000) {
		rng := rand.New(rand.NewPCG(seed, 2))
		log := newLog()
		id := uuid.New()
		flow := domain.FlowSpec{Name: "f", Tasks: []domain.TaskSpec{{Name: "a", Command: []string{"true"}}}}
		created := domain.FlowRunCreated{Name: "r", Flow: flow, TaskRunIDs: map[string]uuid.UUID{"a": uuid.New()}, ScheduledAt: log.clock}
		events, err := domain.DecideFlowRun(domain.FlowRun{ID: id}, domain.CreateFlowRun{FlowRunCreated: created})
		if err != nil {
			t.Fatal(err)
		}
		log.add(id, events...)
		for range 30 {
			state := foldFlowRun(id, log.envs)
			var cmd domain.FlowRunCommand
			switch rng.IntN(7) {
			case 0:
				cmd = domain.MarkFlowRunLate{}
			case 1:
				cmd = domain.MarkFlowRunPending{}
			case 2:
				cmd = domain.MarkFlowRunStarted{}
			case 3, 4:
				cmd = domain.FinishFlowRun{Outcome: outcomes[rng.IntN(len(outcomes))], Message: "x"}
			case 5:
				cmd = domain.CancelFlowRun{}
			default:
				cmd = domain.RetryFlowRun{}
			}
			events, err := domain.DecideFlowRun(state, cmd)
			if err != nil {
				if code := domain.ErrorCode(err); code != domain.CodeConflict && code != domain.CodeInvalid {
					t.Fatalf("seed %d: %T: %v", seed, cmd, err)
				}
				continue
			}
			log.add(id, events...)
		}
		if err := domain.ValidateLog(reg, log.envs); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

func TestTaskRunDecisions(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	spec := domain.TaskSpec{Name: "load_data", Command: []string{"true"}, Retries: 2, RetryDelaySeconds: domain.RetryDelays{5}}
	pending := domain.TaskRun{ID: uuid.New()}.Apply(domain.TaskRunCreated{Task: spec}, now)
	running := pending.Apply(domain.TaskRunStarted{Attempt: 1}, now)

	t.Run("FailureWithRetriesLeftWaitsForTheDelay", func(t *testing.T) {
		t.Parallel()
		events, err := domain.DecideTaskRun(running, domain.FailTaskRun{AttemptFailure: domain.AttemptFailure{Attempt: 1, Error: "db down"}, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		retry, ok := events[0].(domain.TaskRunRetryScheduled)
		if !ok || !retry.RetryAt.Equal(now.Add(5*time.Second)) {
			t.Fatalf("got %#v, want a retry in 5s", events)
		}
		after := running.Apply(retry, now)
		if after.State.Type != domain.Scheduled || after.State.Name != domain.NameAwaitingRetry {
			t.Fatalf("state %+v, want SCHEDULED/AwaitingRetry", after.State)
		}
		again := after.Apply(domain.TaskRunStarted{Attempt: 2}, now)
		if again.State.Name != domain.NameRetrying {
			t.Fatalf("second attempt is %s, want Retrying", again.State.Name)
		}
	})

	t.Run("LastAttemptFailsForGood", func(t *testing.T) {
		t.Parallel()
		r := running.Apply(domain.TaskRunStarted{Attempt: 3}, now)
		r.Attempt = 3
		events, _ := domain.DecideTaskRun(r, domain.FailTaskRun{AttemptFailure: domain.AttemptFailure{Attempt: 3, Error: "x", TimedOut: true}, Now: now})
		if _, ok := events[0].(domain.TaskRunFailed); !ok {
			t.Fatalf("got %#v, want TaskRunFailed", events)
		}
		if s := r.Apply(events[0], now).State; s.Type != domain.Failed || s.Name != domain.NameTimedOut {
			t.Fatalf("state %+v, want FAILED/TimedOut", s)
		}
	})

	t.Run("StaleResultIsRefusedNotApplied", func(t *testing.T) {
		t.Parallel()
		r := running.Apply(domain.TaskRunRetryScheduled{AttemptFailure: domain.AttemptFailure{Attempt: 1, Crashed: true}}, now).Apply(domain.TaskRunStarted{Attempt: 2}, now)
		events, err := domain.DecideTaskRun(r, domain.CompleteTaskRun{Attempt: 1})
		if err != nil {
			t.Fatal(err)
		}
		refused, ok := events[0].(domain.TaskRunResultRefused)
		if !ok || refused.Attempt != 1 || refused.CurrentAttempt != 2 {
			t.Fatalf("got %#v, want a refusal of attempt 1", events)
		}
		if r.Apply(refused, now).State != r.State {
			t.Fatal("a refusal changed the state")
		}
	})

	t.Run("InterruptedAttemptRunsAgainWithoutUsingARetry", func(t *testing.T) {
		t.Parallel()
		noRetries := domain.TaskRun{ID: uuid.New()}.Apply(domain.TaskRunCreated{Task: domain.TaskSpec{Name: "t", Command: []string{"true"}}}, now).
			Apply(domain.TaskRunStarted{Attempt: 1}, now)
		events, _ := domain.DecideTaskRun(noRetries, domain.FailTaskRun{AttemptFailure: domain.AttemptFailure{Attempt: 1, Interrupted: true}, Now: now})
		retry, ok := events[0].(domain.TaskRunRetryScheduled)
		if !ok || !retry.RetryAt.Equal(now) {
			t.Fatalf("got %#v, want an immediate retry", events)
		}
		again := noRetries.Apply(retry, now).Apply(domain.TaskRunStarted{Attempt: 2}, now)
		events, _ = domain.DecideTaskRun(again, domain.FailTaskRun{AttemptFailure: domain.AttemptFailure{Attempt: 2, Error: "x"}, Now: now})
		if _, ok := events[0].(domain.TaskRunFailed); !ok {
			t.Fatalf("a real failure after a hand-back: got %#v, want TaskRunFailed (no retries)", events)
		}
	})

	t.Run("StartTwiceIsAConflict", func(t *testing.T) {
		t.Parallel()
		_, err := domain.DecideTaskRun(running, domain.StartTaskRun{Attempt: 2})
		if domain.ErrorCode(err) != domain.CodeConflict {
			t.Fatalf("got %v, want a conflict", err)
		}
	})
}

func TestValidatorFindsIllegalTransitions(t *testing.T) {
	t.Parallel()
	reg := domain.NewRegistry()
	spec := domain.TaskSpec{Name: "a", Command: []string{"true"}}
	cases := []struct {
		name   string
		events []domain.Event
		want   string
	}{
		{"CompletedTwice", []domain.Event{domain.TaskRunCreated{Task: spec}, domain.TaskRunStarted{Attempt: 1}, domain.TaskRunCompleted{Attempt: 1}, domain.TaskRunCompleted{Attempt: 1}}, "COMPLETED to COMPLETED"},
		{"StartAfterTerminal", []domain.Event{domain.TaskRunCreated{Task: spec}, domain.TaskRunStarted{Attempt: 1}, domain.TaskRunFailed{AttemptFailure: domain.AttemptFailure{Attempt: 1}}, domain.TaskRunStarted{Attempt: 2}}, "FAILED to RUNNING"},
		{"ResultOfOldAttempt", []domain.Event{domain.TaskRunCreated{Task: spec}, domain.TaskRunStarted{Attempt: 1}, domain.TaskRunRetryScheduled{AttemptFailure: domain.AttemptFailure{Attempt: 1}}, domain.TaskRunStarted{Attempt: 2}, domain.TaskRunCompleted{Attempt: 1}}, "attempt 1 applied while attempt 2"},
		{"CompletedBeforeCreated", []domain.Event{domain.TaskRunCompleted{Attempt: 0}}, "(new) to COMPLETED"},
		{"AttemptSkipped", []domain.Event{domain.TaskRunCreated{Task: spec}, domain.TaskRunStarted{Attempt: 2}}, "attempt 2 started after attempt 0"},
		{"FlowCompletedTwice", []domain.Event{domain.FlowRunCreated{}, domain.FlowRunPending{}, domain.FlowRunCompleted{}, domain.FlowRunCompleted{}}, "COMPLETED to COMPLETED"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			log := newLog()
			log.add(uuid.New(), tc.events...)
			err := domain.ValidateLog(reg, log.envs)
			var v *domain.Violation
			if !errors.As(err, &v) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a violation mentioning %q", err, tc.want)
			}
			if v.Position != int64(len(tc.events)) {
				t.Fatalf("violation at position %d, want the last event (%d)", v.Position, len(tc.events))
			}
		})
	}

	t.Run("VersionGap", func(t *testing.T) {
		t.Parallel()
		log := newLog()
		id := uuid.New()
		log.add(id, domain.TaskRunCreated{Task: spec}, domain.TaskRunStarted{Attempt: 1})
		log.envs[1].Version = 3
		if err := domain.ValidateLog(reg, log.envs); err == nil || !strings.Contains(err.Error(), "version 3 follows version 1") {
			t.Fatalf("got %v, want a version gap", err)
		}
	})

	// A log written before appends kept each stream's versions in log
	// order can hold a version before the one it follows: judged in
	// version order, it is legal; a version that never comes is a gap.
	t.Run("VersionBeforeTheOneItFollows", func(t *testing.T) {
		t.Parallel()
		log := newLog()
		id := uuid.New()
		log.add(id, domain.TaskRunCreated{Task: spec}, domain.TaskRunStarted{Attempt: 1}, domain.TaskRunCompleted{Attempt: 1})
		log.envs[1], log.envs[2] = log.envs[2], log.envs[1]
		if err := domain.ValidateLog(reg, log.envs); err != nil {
			t.Fatalf("version 3 before version 2: %v", err)
		}
		if err := domain.ValidateLog(reg, log.envs[:2]); err == nil || !strings.Contains(err.Error(), "version 3 follows version 1") {
			t.Fatalf("version 3 with no version 2: got %v, want a version gap", err)
		}
		// judged in version order: a completion before its start is not legal
		log.envs[1].Event, log.envs[2].Event = log.envs[2].Event, log.envs[1].Event
		log.envs[1].Type, log.envs[2].Type = log.envs[2].Type, log.envs[1].Type
		log.envs[1].Data, log.envs[2].Data = log.envs[2].Data, log.envs[1].Data
		if err := domain.ValidateLog(reg, log.envs); err == nil {
			t.Fatal("a result before its attempt started was found legal")
		}
	})
}
