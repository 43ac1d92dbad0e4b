package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/internal/apicontract"
)

// Fuzz targets over the real handler and a real database. Their seed
// corpora run in every `go test`; `go test -fuzz FuzzAPIDeploymentBody
// ./api/` explores further. Each input must get a 2xx, or a 4xx with the
// error envelope: never a 5xx (a panic is recovered as one) and never a
// response without the envelope.

// checkFuzzResponse fails on anything but a 2xx or an enveloped 4xx.
func checkFuzzResponse(t *testing.T, what string, rec *httptest.ResponseRecorder) {
	t.Helper()
	status := rec.Code
	if status >= 200 && status < 300 {
		return
	}
	if status < 400 || status >= 500 {
		t.Fatalf("%s: status %d: %s", what, status, rec.Body.Bytes())
	}
	var env struct {
		Error *struct {
			Code    domain.Code     `json:"code"`
			Message string          `json:"message"`
			Details []domain.Detail `json:"details"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil || env.Error == nil || env.Error.Code == "" || env.Error.Message == "" || env.Error.Details == nil {
		t.Fatalf("%s: %d without the error envelope (%v): %s", what, status, err, rec.Body.Bytes())
	}
	if env.Error.Code == domain.CodeInternal {
		t.Fatalf("%s: internal error for a bad input", what)
	}
}

// serve sends one request to the handler, without the network, and checks
// it and the answer against the OpenAPI document.
func (b fullBundle) serve(t testing.TB, method, target, contentType string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "http://ordo.test/", bytes.NewReader(body))
	req.URL.Path, req.URL.RawPath, req.URL.RawQuery = "", "", ""
	if u, err := req.URL.Parse(target); err == nil {
		req.URL = u
	} else {
		req.URL.Path = target
	}
	req.RequestURI = req.URL.RequestURI()
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	apicontract.Handler(t, b.handler).ServeHTTP(rec, req)
	return rec
}

// bodySeeds are inputs every body fuzzer starts from: valid bodies of each
// endpoint, and the usual ways JSON goes wrong.
var bodySeeds = []string{
	``,
	`{}`,
	`null`,
	`[]`,
	`"string"`,
	`{"name": "d", "flow": {"name": "f", "tasks": [{"name": "a", "command": ["x"]}]}}`,
	`{"name": "d", "schedule": {"cron": "*/5 * * * *", "timezone": "Europe/Paris"}, "flow": {"name": "f", "tasks": [{"name": "a", "command": ["x"], "retry_delay_seconds": [1, 5]}]}}`,
	`{"parameters": {"table": "houses"}, "idempotency_key": "k1"}`,
	`{"scheduled_at": "2030-01-02T03:04:05Z"}`,
	`{"scheduled_at": "yesterday"}`,
	`{"name": "q1", "concurrency_limit": 4}`,
	`{"name": "q1", "concurrency_limit": -1}`,
	`{"name": "` + "\x00" + `"}`,
	`{"name": "' OR 1=1 --"}`,
	`{"name": "ü🙂", "flow": {"name": "f", "tasks": []}}`,
	`{"name": 1e400}`,
	`{"parameters": {"n": 123456789012345678901234567890}}`,
	`{"name": "d"} {"name": "e"}`,
	`{"name": "d",}`,
	`{"a": ` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`,
	`{"name": "d", "flow": {"name": "f", "tasks": [{"name": "a", "command": ["x"], "depends_on": ["a"]}]}}`,
	`{"name": "d", "flow": {"name": "f", "tasks": [{"name": "a", "command": ["x"], "env": {"DB_PASSWORD": "x"}}]}}`,
	"name: d\nflow:\n  name: f\n  tasks:\n    - {name: a, command: [x]}\n",
	"name: &a [*a]\n",
	"\xff\xfe{\"name\": \"d\"}",
	`{"name": "d", "description": "\u0000", "flow": {"name": "f", "tasks": [{"name": "a", "command": ["x"]}]}}`,
	`{"parameters": {"k\u0000": "v"}, "idempotency_key": "\u0000"}`,
	`{"name": "q\u0000"}`,
}

func fuzzBodies(f *testing.F) {
	for i, s := range bodySeeds {
		f.Add([]byte(s), i%3 == 0)
	}
}

func FuzzAPIDeploymentBody(f *testing.F) {
	fuzzBodies(f)
	b := fullSetup(f, false)
	f.Fuzz(func(t *testing.T, body []byte, yaml bool) {
		ct := "application/json"
		if yaml {
			ct = "application/yaml"
		}
		checkFuzzResponse(t, "POST /deployments", b.serve(t, "POST", "/api/v1/deployments", ct, body))
	})
}

func FuzzAPIRunCreateBody(f *testing.F) {
	fuzzBodies(f)
	b := fullSetup(f, false)
	rec := b.serve(f, "POST", "/api/v1/deployments", "application/json", mustJSON(deploymentBody("fuzz-runs", func(d map[string]any) {
		delete(d, "schedule")
		d["parameters_schema"] = map[string]any{"type": "object", "properties": map[string]any{"test_size": map[string]any{"type": "number", "maximum": 1}}}
	})))
	if rec.Code != 201 {
		f.Fatalf("deploy: %d %s", rec.Code, rec.Body)
	}
	var d struct{ ID string }
	_ = json.Unmarshal(rec.Body.Bytes(), &d)
	f.Add([]byte(`{"parameters": {"test_size": 2}}`), false)
	f.Fuzz(func(t *testing.T, body []byte, wrongID bool) {
		id := d.ID
		if wrongID {
			id = "00000000-0000-0000-0000-000000000000"
		}
		checkFuzzResponse(t, "POST /deployments/{id}/runs", b.serve(t, "POST", "/api/v1/deployments/"+id+"/runs", "application/json", body))
	})
}

func FuzzAPIWorkQueueBody(f *testing.F) {
	fuzzBodies(f)
	b := fullSetup(f, false)
	f.Fuzz(func(t *testing.T, body []byte, _ bool) {
		checkFuzzResponse(t, "POST /work-queues", b.serve(t, "POST", "/api/v1/work-queues", "application/json", body))
	})
}

// FuzzAPIQuery sends random query strings and path segments to the read
// endpoints.
func FuzzAPIQuery(f *testing.F) {
	for _, s := range []string{
		"state=COMPLETED&tag=prod&limit=5", "name=%27%20OR%201%3D1%20--", "since=2026-01-01T00:00:00Z&until=x",
		"cursor=eyJrIjoiYSJ9", "cursor=%00", "limit=-1", "after=1-2", "type=FlowRunCreated,,", "at=2026-01-01T00:00:00Z",
		"follow=maybe", "state=" + strings.Repeat("x", 5000),
	} {
		f.Add(s, "00000000-0000-0000-0000-000000000001", uint8(len(s)))
	}
	f.Add("", "..%2F..%2Fetc%2Fpasswd", uint8(3))
	b := fullSetup(f, false)
	paths := []string{"/api/v1/runs", "/api/v1/deployments", "/api/v1/events", "/api/v1/work-queues",
		"/api/v1/runs/{id}", "/api/v1/runs/{id}/graph", "/api/v1/runs/{id}/events", "/api/v1/runs/{id}/history",
		"/api/v1/runs/{id}/logs", "/api/v1/deployments/{id}"}
	f.Fuzz(func(t *testing.T, query, id string, which uint8) {
		if strings.Contains(query, "follow") {
			return // a follow stream does not end by itself
		}
		path := strings.ReplaceAll(paths[int(which)%len(paths)], "{id}", escapePathSegment(id))
		target := path + "?" + query
		rec := b.serve(t, "GET", target, "", nil)
		if rec.Code == http.StatusOK {
			return
		}
		checkFuzzResponse(t, "GET "+target, rec)
	})
}

// escapePathSegment keeps a fuzzed id inside one path segment.
func escapePathSegment(s string) string {
	var out strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' {
			out.WriteByte(c)
		} else {
			out.WriteString("%" + strings.ToUpper(string("0123456789abcdef"[c>>4])+string("0123456789abcdef"[c&15])))
		}
	}
	return out.String()
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
