package domain_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
)

// FuzzRegistryDecode feeds random type names and payloads to the event
// decoder, then what decodes to the validator and to Apply, on top of a
// flow run and a task run already under way. Nothing may panic; a payload
// that decodes must survive a JSON round trip; the validator answers nil or
// a *Violation, never anything else.
func FuzzRegistryDecode(f *testing.F) {
	reg := domain.NewRegistry()
	types := reg.Types()
	slices.Sort(types)
	for i, typ := range types {
		f.Add(typ, []byte(`{}`), uint8(i))
	}
	for _, seed := range []struct {
		typ  string
		data string
	}{
		{"FlowRunCreated", `{"name": "r", "flow": {"name": "f", "tasks": [{"name": "a", "command": ["x"]}]}, "task_run_ids": {"a": "00000000-0000-0000-0000-000000000001"}, "scheduled_at": "2026-01-01T00:00:00Z"}`},
		{"TaskRunStarted", `{"attempt": 1, "worker": "w1"}`},
		{"TaskRunStarted", `{"attempt": -9223372036854775808}`},
		{"TaskRunCompleted", `{"attempt": 1, "result": {"rows": 10}}`},
		{"TaskRunRetryScheduled", `{"attempt": 1, "error": "x", "retry_at": "0001-01-01T00:00:00Z"}`},
		{"TaskRunFailed", `{"attempt": 1, "exit_code": 137, "log_tail": ["a", "b"], "crashed": true}`},
		{"FlowRunRetried", `{"task_names": ["a", "nope"]}`},
		{"DeploymentUpdated", `{"spec": {"name": "d"}, "version": 2, "changed": ["flow"]}`},
		{"EventsArchived", `{"flow_run_ids": ["00000000-0000-0000-0000-000000000001"], "file": "/a.ndjson.gz", "count": 12, "before": "2026-01-01T00:00:00Z"}`},
		{"TaskRunCompleted", `{"attempt": "1"}`},
		{"FlowRunCompleted", `{"result": }`},
		{"NoSuchEvent", `{}`},
		{"", ``},
		{"TaskRunCancelled", `null`},
		{"TaskRunCancelled", "\x00"},
	} {
		f.Add(seed.typ, []byte(seed.data), uint8(0))
	}
	f.Fuzz(func(t *testing.T, typ string, data []byte, pick uint8) {
		if pick%2 == 1 { // half the time, a registered type with random data
			typ = types[int(pick/2)%len(types)]
		}
		e, err := reg.Decode(typ, data)
		if err != nil {
			if e != nil {
				t.Fatalf("Decode(%q) returned an event and an error", typ)
			}
			return
		}
		if e.EventType() != typ {
			t.Fatalf("Decode(%q) returned a %s", typ, e.EventType())
		}
		b1, err := json.Marshal(e)
		if err != nil {
			return // a payload may decode into values JSON cannot encode back (not a crash)
		}
		e2, err := reg.Decode(typ, b1)
		if err != nil {
			t.Fatalf("%s does not decode its own encoding %s: %v", typ, b1, err)
		}
		if b2, _ := json.Marshal(e2); !bytes.Equal(b1, b2) {
			t.Fatalf("%s round trip changed:\n%s\n%s", typ, b1, b2)
		}

		// the event after a run under way, through the validator and Apply
		flowID, taskID := uuid.MustParse("00000000-0000-0000-0000-0000000000f1"), uuid.MustParse("00000000-0000-0000-0000-0000000000a1")
		l := newLog()
		l.add(flowID, domain.FlowRunCreated{Name: "r", Flow: domain.FlowSpec{Name: "f", Tasks: []domain.TaskSpec{{Name: "a", Command: []string{"x"}}}},
			TaskRunIDs: map[string]uuid.UUID{"a": taskID}}, domain.FlowRunPending{}, domain.FlowRunStarted{})
		l.add(taskID, domain.TaskRunCreated{FlowRunID: flowID, Task: domain.TaskSpec{Name: "a", Command: []string{"x"}}}, domain.TaskRunStarted{Attempt: 1})
		v := domain.NewLogValidator(reg)
		for _, env := range l.envs {
			if err := v.Check(env); err != nil {
				t.Fatalf("the prefix is not valid: %v", err)
			}
		}
		stream := map[string]uuid.UUID{domain.StreamFlowRun: flowID, domain.StreamTaskRun: taskID}[e.StreamType()]
		if stream == uuid.Nil {
			stream = uuid.New()
		}
		env := domain.Envelope{Position: 100, StreamID: stream, StreamType: e.StreamType(), Version: l.versions[stream] + 1,
			Type: typ, Data: data, RecordedAt: time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)}
		if err := v.Check(env); err != nil {
			var viol *domain.Violation
			if !errors.As(err, &viol) {
				t.Fatalf("validator error %v (%T) is not a *Violation", err, err)
			}
		}
		at := env.RecordedAt
		foldFlowRun(flowID, l.envs).Apply(e, at)
		foldTaskRun(taskID, l.envs).Apply(e, at)
		domain.Deployment{}.Apply(e, at)
	})
}
