package projections

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
)

// plainFlowRun has FlowRun's fields and JSON tags but not its methods, so
// encoding/json encodes it by reflection: the reference for AppendJSON.
type plainFlowRun FlowRun

func TestAppendRunPageJSONMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	texts := []string{"", "train", "a \"quoted\" name", "tab\tand\nnewline", "<b>&amp;</b>", "café ☕", "bad \xff utf8", "\u2028"}
	text := func() string { return texts[rng.IntN(len(texts))] }
	at := func() time.Time {
		return time.Date(2026, 11, 28, rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1e9)/1000*1000*rng.IntN(2), time.UTC)
	}
	raws := []json.RawMessage{nil, json.RawMessage(`{"table": "houses", "n": [1, 2.5, null]}`), json.RawMessage(`"x"`), json.RawMessage(`42`)}
	for range 500 {
		var page Page[FlowRun]
		for range rng.IntN(4) {
			f := FlowRun{
				ID: uuid.New(), Name: text(), FlowName: text(), DeploymentID: uuid.New(), DeploymentName: text(),
				DeploymentVersion: rng.IntN(9), WorkQueue: text(), Parameters: raws[rng.IntN(len(raws))],
				State:       State{Type: domain.StateType(text()), Name: text(), Timestamp: at(), Message: text()},
				ScheduledAt: at(), RunCount: rng.IntN(3), AutoScheduled: rng.IntN(2) == 0, Result: raws[rng.IntN(len(raws))],
				TaskCount: rng.IntN(100), CreatedAt: at(), UpdatedAt: at().In(time.FixedZone("X", 3600)),
			}
			if rng.IntN(2) == 0 {
				f.Tags = []string{text(), text()}
			}
			if rng.IntN(2) == 0 {
				s, e, p := at(), at(), uuid.New()
				f.StartedAt, f.EndedAt, f.ParentFlowRunID, f.ParentTaskRunID = &s, &e, &p, &p
			}
			if rng.IntN(4) == 0 {
				f.TaskRuns = []TaskRun{{ID: uuid.New(), TaskName: text(), State: f.State, DependsOn: []string{}}}
			}
			page.Items = append(page.Items, f)
		}
		if rng.IntN(2) == 0 {
			c := text()
			page.NextCursor = &c
		}
		got := AppendRunPageJSON(nil, page)
		plain := struct {
			Items      []plainFlowRun `json:"items"`
			NextCursor *string        `json:"next_cursor"`
		}{NextCursor: page.NextCursor, Items: []plainFlowRun{}}
		for _, f := range page.Items {
			plain.Items = append(plain.Items, plainFlowRun(f))
		}
		want, err := json.Marshal(plain)
		if err != nil {
			t.Fatal(err)
		}
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("AppendRunPageJSON wrote invalid JSON: %v\n%s", err, got)
		}
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("AppendRunPageJSON differs from encoding/json:\n got %s\nwant %s", got, want)
		}
	}
}
