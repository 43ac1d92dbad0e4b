package api_test

import (
	"strings"
	"testing"
)

// TestAPIRunParametersUnknownNames: a run whose overrides name a parameter
// the deployment does not have is refused, naming it, before anything is
// stored; a schema that allows other names lets it through.
func TestAPIRunParametersUnknownNames(t *testing.T) {
	t.Parallel()
	b := fullSetup(t, false)
	deploy := func(name string, edit func(map[string]any)) string {
		t.Helper()
		r := b.do(t, "POST", "/api/v1/deployments", deploymentBody(name, edit))
		if r.status != 201 {
			t.Fatalf("deploy %s: %d %s", name, r.status, r.body)
		}
		var d struct{ ID string }
		r.decode(t, &d)
		return d.ID
	}
	ml := deploy("ml", func(d map[string]any) {
		d["parameters"] = map[string]any{"table": "houses", "test_size": 0.2, "n_estimators": 200}
		delete(d, "schedule")
	})
	bare := deploy("bare", func(d map[string]any) { delete(d, "parameters"); delete(d, "schedule") })
	open := deploy("open", func(d map[string]any) {
		d["parameters_schema"] = map[string]any{"type": "object", "additionalProperties": true}
		delete(d, "schedule")
	})

	for _, tc := range []struct {
		deployment, params, field, want string
	}{
		{ml, `{"tabel": "houses"}`, "parameters.tabel", `unknown parameter "tabel" (did you mean "table"? known: n_estimators, table, test_size)`},
		{bare, `{"table": "houses"}`, "parameters.table", `unknown parameter "table" (deployment bare takes no parameters)`},
	} {
		events := b.eventCount(t)
		r := b.do(t, "POST", "/api/v1/deployments/"+tc.deployment+"/runs", `{"parameters": `+tc.params+`}`)
		var e errorEnvelope
		r.decode(t, &e)
		if r.status != 400 || e.Error.Code != "invalid" || !strings.Contains(e.Error.Message, tc.want) ||
			len(e.Error.Details) != 1 || e.Error.Details[0].Field != tc.field || e.Error.Details[0].Message != tc.want {
			t.Errorf("parameters %s: %d %s\nwant 400 invalid with %s: %s", tc.params, r.status, r.body, tc.field, tc.want)
		}
		if n := b.eventCount(t); n != events {
			t.Errorf("parameters %s: %d events appended by a refused run", tc.params, n-events)
		}
	}
	for _, tc := range []struct{ deployment, params string }{
		{ml, `{"table": "flats", "test_size": 0.3}`},
		{open, `{"tabel": "houses"}`},
		{bare, `{}`},
	} {
		if r := b.do(t, "POST", "/api/v1/deployments/"+tc.deployment+"/runs", `{"parameters": `+tc.params+`}`); r.status != 201 {
			t.Errorf("parameters %s: %d %s, want 201", tc.params, r.status, r.body)
		}
	}
}
