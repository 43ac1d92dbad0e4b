package commands

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestSinkResultIsTheSinksResults: a run with several sinks has as result
// the object of their results by name, as encoding/json would write it; a
// sink without a result is null; one sink's result is the run's.
func TestSinkResultIsTheSinksResults(t *testing.T) {
	results := map[string]json.RawMessage{
		"train": json.RawMessage(`{"r2": 0.83, "path": "model.pkl"}`),
		"b.2":   json.RawMessage("[1,\n 2]"),
		"a-1":   nil,
		"z_9":   json.RawMessage(`"<done> & dusted"`),
	}
	sinks := []string{"train", "z_9", "a-1", "b.2"}
	got, err := sinkResult(sinks, func(name string) json.RawMessage { return results[name] })
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]json.RawMessage{}
	for _, s := range sinks {
		want[s] = results[s]
		if want[s] == nil {
			want[s] = json.RawMessage("null")
		}
	}
	wantJSON, _ := json.Marshal(want)
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("result %s is not JSON: %v", got, err)
	}
	if err := json.Unmarshal(wantJSON, &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("result %s, want %s", got, wantJSON)
	}

	one, err := sinkResult([]string{"train"}, func(name string) json.RawMessage { return results[name] })
	if err != nil || string(one) != string(results["train"]) {
		t.Errorf("one sink: result %s (%v), want its own %s", one, err, results["train"])
	}
	if _, err := sinkResult(sinks, func(string) json.RawMessage { return json.RawMessage("{oops") }); err == nil {
		t.Error("a sink result that is not JSON made a result")
	}
}
