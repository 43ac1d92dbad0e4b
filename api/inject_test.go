package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ordoflow/ordo/api"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/projections/projtest"
)

// injections are the hostile values sent in every parameter: SQL
// injection, quoting, NUL bytes, invalid UTF-8, unicode tricks, very long
// values and path traversal, raw and encoded.
var injections = []string{
	`' OR 1=1 --`,
	`'; DROP TABLE events; --`,
	`" OR ""="`,
	`1; SELECT pg_sleep(5)`,
	`1' AND pg_sleep(5) IS NULL --`,
	`%' OR '%'='`,
	`_%`,
	`\`,
	`$1`,
	`) OR (1=1`,
	`ü🙂𝔘‮`,
	"\x00",
	"a\x00b",
	"\xff\xfe",
	strings.Repeat("A", 10000),
	`${jndi:ldap://x/a}`,
	`<script>alert(1)</script>`,
	`../../etc/passwd`,
	`..%2f..%2fetc%2fpasswd`,
	`%2e%2e%2f%2e%2e%2fetc%2fpasswd`,
	`....//....//etc/passwd`,
	`NaN`,
	`-1`,
	`99999999999999999999`,
	`1e309`,
}

// openAPIParam is one parameter of the OpenAPI document.
type openAPIParam struct {
	Name string `json:"name"`
	In   string `json:"in"`
}

// injectTarget is one parameter of one endpoint.
type injectTarget struct {
	method, path string // path with {id}/{name}
	param        openAPIParam
	freeText     bool // a text filter: a 200 must be an empty list
}

// freeTextParams are the query parameters that filter by free text: any
// value is a valid filter, and a hostile one must match nothing.
var freeTextParams = map[string]bool{"name": true, "tag": true, "deployment": true, "work_queue": true, "task": true}

// TestInjectEveryParameter sends every hostile value in every path, query
// and header parameter of every endpoint of the OpenAPI document (which a
// test keeps equal to the routes), and path traversal to the UI and River
// UI: the answers are 4xx, or 200 with an empty list for text filters,
// never slow, never a file's content; and no table changes.
func TestInjectEveryParameter(t *testing.T) {
	t.Parallel()
	b := fullSetup(t, true)
	ctx := context.Background()
	admin, _, err := api.TokenCreate(ctx, b.pool, "injector", api.ScopeAdmin)
	if err != nil {
		t.Fatal(err)
	}
	auth := bearer(admin)

	// data for the filters to filter
	r := b.send(t, "POST", "/api/v1/deployments", mustJSON(deploymentBody("inject-dep", nil)), auth...)
	if r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	var dep struct{ ID string }
	r.decode(t, &dep)
	if r := b.send(t, "POST", "/api/v1/work-queues", []byte(`{"name": "q1", "concurrency_limit": 2}`), auth...); r.status != 201 {
		t.Fatalf("work queue: %d %s", r.status, r.body)
	}
	run := b.log.CreateRun(projtest.RunSpec{Name: "inject-run", DeploymentName: "inject-dep", WorkQueue: "q1", Tags: []string{"prod"}})
	run.Complete()
	writeLogLines(t, b.bundle, run, "load", "stdout", "loading", "done")
	b.sync(t)

	var doc struct {
		Paths map[string]map[string]struct {
			Parameters []openAPIParam `json:"parameters"`
		} `json:"paths"`
	}
	r = b.send(t, "GET", "/api/v1/openapi.json", nil, auth...)
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatal(err)
	}
	var targets []injectTarget
	for path, methods := range doc.Paths {
		for method, op := range methods {
			for _, p := range op.Parameters {
				targets = append(targets, injectTarget{method: strings.ToUpper(method), path: path, param: p, freeText: p.In == "query" && freeTextParams[p.Name]})
			}
		}
	}
	targets = append(targets,
		injectTarget{method: "GET", path: "/api/v1/runs/{id}/logs", param: openAPIParam{Name: "Last-Event-ID", In: "header"}},
		injectTarget{method: "GET", path: "/ui/live", param: openAPIParam{Name: "after", In: "query"}},
		injectTarget{method: "GET", path: "/ui/live", param: openAPIParam{Name: "Last-Event-ID", In: "header"}},
	)
	sort.Slice(targets, func(i, j int) bool {
		return targets[i].path+targets[i].method+targets[i].param.Name < targets[j].path+targets[j].method+targets[j].param.Name
	})
	if len(targets) < 25 {
		t.Fatalf("only %d parameters in the OpenAPI document", len(targets))
	}

	// defaults that reach the handlers' deeper code when another parameter
	// is the hostile one
	fill := func(path string) string {
		id := run.ID.String()
		if strings.HasPrefix(path, "/api/v1/deployments/") {
			id = dep.ID
		}
		return strings.NewReplacer("{id}", id, "{name}", "q1").Replace(path)
	}
	required := map[string]string{"/api/v1/runs/{id}/history": "at=2030-01-01T00:00:00Z"}

	before := tableCounts(t, b.bundle)
	stats := map[string]int{}
	for _, tg := range targets {
		// a control: the filter with a value that matches, so that an empty
		// answer to a hostile value shows filtering, not a filter ignored
		if tg.freeText {
			control := map[string]string{"name": "inject", "tag": "prod", "deployment": "inject-dep", "work_queue": "q1", "task": "load"}[tg.param.Name]
			if tg.param.Name == "work_queue" && strings.HasPrefix(tg.path, "/api/v1/deployments") {
				control = "ml" // the deployment's queue; the run's is q1
			}
			path := fill(tg.path) + "?" + url.Values{tg.param.Name: {control}}.Encode()
			r := b.send(t, tg.method, path, nil, auth...)
			if r.status != 200 || itemCount(r.body) == 0 {
				t.Errorf("control %s %s: %d with %d items: the filter must match the fixture", tg.method, path, r.status, itemCount(r.body))
			}
		}
		for _, payload := range injections {
			path := fill(tg.path)
			query := url.Values{}
			if q, ok := required[tg.path]; ok {
				query, _ = url.ParseQuery(q)
			}
			header := append([]string{}, auth...)
			switch tg.param.In {
			case "path":
				path = strings.Replace(tg.path, "{"+tg.param.Name+"}", url.PathEscape(payload), 1)
				path = fill(path)
			case "query":
				query.Set(tg.param.Name, payload)
			case "header":
				if strings.ContainsAny(payload, "\x00\r\n\xff") {
					continue // not sendable in a header
				}
				header = append(header, tg.param.Name, payload)
			}
			if tg.method != "GET" && tg.param.In != "path" {
				continue // writes with a valid path would change data: their bodies are fuzzed instead
			}
			target := path
			if len(query) > 0 {
				target += "?" + query.Encode()
			}
			var body []byte
			if tg.method == "POST" {
				body = []byte(`{}`)
			}
			start := time.Now()
			r := b.send(t, tg.method, target, body, header...)
			took := time.Since(start)
			what := fmt.Sprintf("%s %s [%s %s=%.40q]", tg.method, tg.path, tg.param.In, tg.param.Name, payload)
			stats[fmt.Sprint(r.status)]++
			switch {
			case took > 3*time.Second:
				t.Errorf("%s took %s", what, took)
			case r.status >= 400 && r.status < 500 && tg.method == "HEAD":
				// an answer to HEAD has no body, so no envelope: its status
				// is what there is to check
			case r.status >= 400 && r.status < 500:
				checkInjectEnvelope(t, what, r)
			case r.status == 200 && tg.freeText:
				if n := itemCount(r.body); n != 0 {
					t.Errorf("%s: 200 with %d items, want none", what, n)
				}
			case r.status == 200 && isEmptyList(r.body):
			case r.status == 200 && numeric(payload) && itemCount(r.body) >= 0:
				// a number where a number is expected (after=-1: from the start)
			default:
				t.Errorf("%s: %d %.300s", what, r.status, r.body)
			}
		}
	}

	// path traversal beside the API: the UI's assets and pages, River UI
	for _, p := range []string{
		"/assets/../../../../etc/passwd", "/assets/..%2f..%2f..%2fetc%2fpasswd", "/assets/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
		"/assets/js/../../../etc/passwd", "/..%2f..%2fetc%2fpasswd", "/runs/..%2f..%2f..%2fetc%2fpasswd",
		"/riverui/../../etc/passwd", "/riverui/..%2f..%2fetc%2fpasswd", "/riverui/assets/..%2f..%2f..%2fetc%2fpasswd",
		"/api/v1/../../etc/passwd", "/api/v1/runs/..%2f..%2f..%2fetc%2fpasswd/events", "/ui/live/..%2f..%2fetc%2fpasswd",
	} {
		r := b.send(t, "GET", p, nil, auth...)
		stats["traversal "+fmt.Sprint(r.status)]++
		if r.status >= 500 || strings.Contains(string(r.body), "root:x:0:0") || strings.Contains(string(r.body), "/bin/bash") {
			t.Errorf("GET %s: %d %.200s", p, r.status, r.body)
		}
		if strings.HasPrefix(p, "/api/") && r.status != 404 {
			t.Errorf("GET %s: %d, want 404", p, r.status)
		}
	}
	t.Logf("injection pass: %d parameters x %d values; answers %v", len(targets), len(injections), stats)
	sameCounts(t, before, tableCounts(t, b.bundle))
}

// checkInjectEnvelope fails unless a 4xx carries the error envelope.
func checkInjectEnvelope(t *testing.T, what string, r response) {
	t.Helper()
	var env errorEnvelope
	if err := json.Unmarshal(r.body, &env); err != nil || env.Error.Code == "" || env.Error.Code == string(domain.CodeInternal) {
		t.Errorf("%s: %d without the envelope: %.200s", what, r.status, r.body)
	}
}

func itemCount(body []byte) int {
	var page struct {
		Items []json.RawMessage `json:"items"`
	}
	if json.Unmarshal(body, &page) != nil {
		return -1
	}
	return len(page.Items)
}

func isEmptyList(body []byte) bool { return itemCount(body) == 0 }

func numeric(s string) bool {
	return s == "-1" || s == "99999999999999999999" || s == "1e309" || s == "NaN"
}

// TestInjectNULInBodies: JSON may spell a NUL character (\u0000) that
// PostgreSQL cannot store; every body field holding one is refused as
// invalid, naming the field, before anything is written. So are
// Idempotency-Key headers that are not UTF-8.
func TestInjectNULInBodies(t *testing.T) {
	t.Parallel()
	b := fullSetup(t, false)
	r := b.send(t, "POST", "/api/v1/deployments", mustJSON(deploymentBody("nul", nil)))
	if r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	var dep struct{ ID string }
	r.decode(t, &dep)
	b.sync(t)
	before := tableCounts(t, b.bundle)
	flow := `"flow": {"name": "f", "tasks": [{"name": "a", "command": ["x"]}]}`
	for _, c := range []struct {
		path, body, ct, field string
	}{
		{"/api/v1/deployments", `{"name": "d", "description": "a\u0000b", ` + flow + `}`, "", "description"},
		{"/api/v1/deployments", `{"name": "d", "parameters": {"x": ["ok", "\u0000"]}, ` + flow + `}`, "", "parameters.x[1]"},
		{"/api/v1/deployments", `{"name": "d", "parameters": {"k\u0000": 1}, ` + flow + `}`, "", `parameters.k\u0000`},
		{"/api/v1/deployments", `{"name": "d", "flow": {"name": "f", "tasks": [{"name": "a", "command": ["x", "\u0000"]}]}}`, "", "flow.tasks[0].command[1]"},
		{"/api/v1/deployments", `{"name": "d", "flow": {"name": "f", "tasks": [{"name": "a", "command": ["x"], "env": {"A": "\u0000"}}]}}`, "", "flow.tasks[0].env.A"},
		{"/api/v1/deployments", "name: d\ndescription: \"a\\0b\"\nflow: {name: f, tasks: [{name: a, command: [x]}]}\n", "application/yaml", ""}, // refused by the YAML reader, without a field
		{"/api/v1/deployments/" + dep.ID + "/runs", `{"parameters": {"table": "\u0000"}}`, "", "parameters.table"},
		{"/api/v1/deployments/" + dep.ID + "/runs", `{"idempotency_key": "\u0000"}`, "", "idempotency_key"},
	} {
		h := []string{}
		if c.ct != "" {
			h = []string{"Content-Type", c.ct}
		}
		r := b.send(t, "POST", c.path, []byte(c.body), h...)
		var env errorEnvelope
		_ = json.Unmarshal(r.body, &env)
		if r.status != 400 || c.field != "" && (len(env.Error.Details) != 1 || env.Error.Details[0].Field != c.field) {
			t.Errorf("POST %s %s: %d %s, want 400 naming %s", c.path, c.body, r.status, r.body, c.field)
		}
	}
	r = b.send(t, "POST", "/api/v1/deployments", mustJSON(deploymentBody("nul2", nil)), "Idempotency-Key", "k\xff")
	if r.status != 400 || !strings.Contains(string(r.body), "Idempotency-Key") {
		t.Errorf("Idempotency-Key not UTF-8: %d %s", r.status, r.body)
	}
	sameCounts(t, before, tableCounts(t, b.bundle))
}
