package domain_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
)

// jsonbText prints v as PostgreSQL prints jsonb: object keys by length,
// then bytewise, ": " after each key and ", " between members.
func jsonbText(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var doc any
	if err := d.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	var print func(any)
	print = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			slices.SortFunc(keys, func(a, b string) int {
				if len(a) != len(b) {
					return len(a) - len(b)
				}
				return strings.Compare(a, b)
			})
			out.WriteByte('{')
			for i, k := range keys {
				if i > 0 {
					out.WriteString(", ")
				}
				kb, _ := json.Marshal(k)
				out.Write(kb)
				out.WriteString(": ")
				print(v[k])
			}
			out.WriteByte('}')
		case []any:
			out.WriteByte('[')
			for i, e := range v {
				if i > 0 {
					out.WriteString(", ")
				}
				print(e)
			}
			out.WriteByte(']')
		default:
			b, _ := json.Marshal(v)
			out.Write(b)
		}
	}
	print(doc)
	return out.Bytes()
}

// TestFlowRunCreatedDecodesAsJSONDoes: a FlowRunCreated decodes to what
// encoding/json gives, whether PostgreSQL printed it or not; the runs of one
// spec share its decoding, and a big spec is decoded on its own every time.
func TestFlowRunCreatedDecodesAsJSONDoes(t *testing.T) {
	reg := domain.NewRegistry()
	flow := domain.FlowSpec{Name: "etl", Tasks: []domain.TaskSpec{
		{Name: "extract", Command: []string{"sh", "-c", `echo "{\"rows\": 3}"`}, Retries: 2, RetryDelaySeconds: domain.RetryDelays{1, 5}, Env: map[string]string{"A": "}{"}},
		{Name: "load", Handler: "load", DependsOn: []string{"extract"}, Parameters: map[string]any{"table": "t", "opts": map[string]any{"fast": true}}, Cache: &domain.CachePolicy{Key: "inputs"}},
	}}
	run := func(f domain.FlowSpec) domain.FlowRunCreated {
		ids := map[string]uuid.UUID{}
		for _, task := range f.Tasks {
			ids[task.Name] = uuid.New()
		}
		return domain.FlowRunCreated{
			Name: "etl-1", DeploymentID: uuid.New(), DeploymentName: "etl", DeploymentVersion: 3, WorkQueue: "default",
			Tags: []string{"nightly"}, Parameters: map[string]any{"day": "2026-11-29"}, Flow: f, TaskRunIDs: ids,
			ScheduledAt: time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC),
		}
	}
	var big domain.FlowSpec
	big.Name = "big"
	for i := range 2000 {
		big.Tasks = append(big.Tasks, domain.TaskSpec{Name: fmt.Sprintf("task_%04d", i), Handler: "noop"})
	}
	decode := func(data []byte) domain.FlowRunCreated {
		t.Helper()
		e, err := reg.Decode("FlowRunCreated", data)
		if err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		return e.(domain.FlowRunCreated)
	}
	want := func(data []byte) domain.FlowRunCreated {
		var e domain.FlowRunCreated
		if err := json.Unmarshal(data, &e); err != nil {
			t.Fatal(err)
		}
		return e
	}
	first, second, large := run(flow), run(flow), run(big)
	for _, ev := range []domain.FlowRunCreated{first, second, large} {
		for _, data := range [][]byte{jsonbText(t, ev), mustJSON(t, ev)} {
			if got := decode(data); !reflect.DeepEqual(got, want(data)) {
				t.Errorf("%.80s... decoded to %+v, want %+v", data, got, want(data))
			}
		}
	}
	a, b := decode(jsonbText(t, first)), decode(jsonbText(t, second))
	if &a.Flow.Tasks[0] != &b.Flow.Tasks[0] {
		t.Error("two runs of one spec decoded it twice")
	}
	if x, y := decode(jsonbText(t, large)), decode(jsonbText(t, large)); &x.Flow.Tasks[0] == &y.Flow.Tasks[0] {
		t.Error("a spec over the size limit was kept")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTaskRunIDsDecodeAsJSONDoes: a run's task run ids decode to what
// encoding/json gives, in the form PostgreSQL prints jsonb and in others,
// and what encoding/json refuses is refused.
func TestTaskRunIDsDecodeAsJSONDoes(t *testing.T) {
	ids := map[string]uuid.UUID{}
	for _, name := range []string{"a", "train", "t00042", `quote"d`, `back\slash`, "ünïcode", "tab\there", "</script>"} {
		ids[name] = uuid.New()
	}
	docs := map[string][]byte{
		"as jsonb prints it":    jsonbText(t, ids),
		"as encoding/json does": must(json.Marshal(ids)),
		"one":                   jsonbText(t, map[string]uuid.UUID{"only": uuid.New()}),
		"empty":                 []byte(`{}`),
		"null":                  []byte(`null`),
		"spaced otherwise":      []byte(`{ "a" : "` + uuid.NewString() + `" }`),
		"id in braces":          []byte(`{"a": "{` + uuid.NewString() + `}"}`),
	}
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) {
			var want, got struct {
				IDs map[string]uuid.UUID `json:"ids"`
			}
			var fast struct {
				IDs domain.TaskRunIDs `json:"ids"`
			}
			in := []byte(`{"ids": ` + string(doc) + `}`)
			if err := json.Unmarshal(in, &want); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(in, &fast); err != nil {
				t.Fatal(err)
			}
			got.IDs = fast.IDs
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("decoded %v, encoding/json %v", got.IDs, want.IDs)
			}
		})
	}
	for _, bad := range []string{
		`{"a": "not-a-uuid-but-exactly-thirty-six!"}`,
		`{"a": "` + uuid.NewString() + `", }`,
		`{"a": 42}`,
		`["a"]`,
	} {
		var want map[string]uuid.UUID
		var got domain.TaskRunIDs
		errWant, errGot := json.Unmarshal([]byte(bad), &want), json.Unmarshal([]byte(bad), &got)
		if errWant == nil || errGot == nil {
			t.Errorf("%s: encoding/json says %v, TaskRunIDs %v; both should refuse it", bad, errWant, errGot)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
