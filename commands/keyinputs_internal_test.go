package commands

import (
	"encoding/json"
	"testing"

	"github.com/ordoflow/ordo/domain"
)

// TestCacheKeyCoversInputFiles: with key: inputs, other upstream files
// make another key, and tasks whose upstream tasks left no files keep the
// key they had.
func TestCacheKeyCoversInputFiles(t *testing.T) {
	task := domain.TaskSpec{Name: "train", Command: []string{"true"}, DependsOn: []string{"load"}, Cache: &domain.CachePolicy{Key: domain.CacheKeyInputs}}
	inputs := map[string]json.RawMessage{"load": json.RawMessage(`{"rows": 3}`)}
	key := func(files map[string][]domain.Output) string {
		k, ok := domain.CacheKey(task, nil, keyInputs(inputs, files))
		if !ok {
			t.Fatal("no key")
		}
		return k
	}
	plain, _ := domain.CacheKey(task, nil, inputs)
	if key(nil) != plain {
		t.Error("without input files the key changed")
	}
	a := key(map[string][]domain.Output{"load": {{Name: "data.csv", SHA256: "aa"}}})
	b := key(map[string][]domain.Output{"load": {{Name: "data.csv", SHA256: "bb"}}})
	if a == plain || a == b {
		t.Errorf("keys %s, %s and %s: other input files must make other keys", plain, a, b)
	}
	if inputs["load/outputs"] != nil {
		t.Error("keyInputs changed the inputs it was given")
	}
}
