package api_test

import (
	"bytes"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/projections"
	"github.com/ordoflow/ordo/projections/projtest"
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

// TestAPINamesWhereIDsGo: every run and deployment route takes a name where
// it takes an id; a name several runs carry is a conflict that lists their
// ids, a name nobody carries is not found.
func TestAPINamesWhereIDsGo(t *testing.T) {
	t.Parallel()
	b := fullSetup(t, false)
	r := b.do(t, "POST", "/api/v1/deployments", deploymentBody("named-dep", func(d map[string]any) { delete(d, "schedule") }))
	var dep struct{ ID string }
	r.decode(t, &dep)
	startRun := func(name string) string {
		t.Helper()
		r := b.do(t, "POST", "/api/v1/deployments/named-dep/runs", map[string]any{"name": name})
		var run struct {
			ID           string `json:"id"`
			Name         string `json:"name"`
			DeploymentID string `json:"deployment_id"`
		}
		r.decode(t, &run)
		if r.status != 201 || run.Name != name || run.DeploymentID != dep.ID {
			t.Fatalf("start run %q by the deployment's name: %d %s", name, r.status, r.body)
		}
		return run.ID
	}
	solo := startRun("solo")
	twins := []string{startRun("twin"), startRun("twin")}
	slashed := startRun("a/b c%")

	runRoutes := []struct{ method, path string }{
		{"GET", ""}, {"GET", "/graph"}, {"GET", "/events"}, {"GET", "/history?at=2100-01-01T00:00:00Z"}, {"GET", "/logs"},
		{"POST", "/cancel"}, {"POST", "/retry"},
	}
	for _, rt := range runRoutes {
		// the name reaches the run: cancel, then retry the cancelled run
		byName := b.do(t, rt.method, "/api/v1/runs/solo"+rt.path, nil)
		if byName.status != 200 || (rt.path != "/logs" && !bytes.Contains(byName.body, []byte(`"`+solo+`"`))) {
			t.Errorf("%s /runs/solo%s: %d %s, want 200 about run %s", rt.method, rt.path, byName.status, byName.body, solo)
		}

		var e errorEnvelope
		amb := b.do(t, rt.method, "/api/v1/runs/twin"+rt.path, nil)
		amb.decode(t, &e)
		if amb.status != 409 || e.Error.Code != "conflict" || !strings.HasPrefix(e.Error.Message, `2 runs are named "twin"`) || len(e.Error.Details) != 2 {
			t.Errorf("%s /runs/twin%s: %d %s", rt.method, rt.path, amb.status, amb.body)
		}
		for _, id := range twins {
			if !strings.Contains(e.Error.Message, id) || !slices.ContainsFunc(e.Error.Details, func(d domain.Detail) bool { return d.Field == "id" && d.Message == id }) {
				t.Errorf("%s /runs/twin%s does not list %s: %s", rt.method, rt.path, id, amb.body)
			}
		}

		e = errorEnvelope{}
		unknown := b.do(t, rt.method, "/api/v1/runs/ghost"+rt.path, nil)
		unknown.decode(t, &e)
		if unknown.status != 404 || e.Error.Code != "not_found" || !strings.Contains(e.Error.Message, `no run named "ghost"`) {
			t.Errorf("%s /runs/ghost%s: %d %s", rt.method, rt.path, unknown.status, unknown.body)
		}
	}
	// a name with a slash, a space and a percent sign, escaped in the path
	if r := b.do(t, "GET", "/api/v1/runs/"+url.PathEscape("a/b c%"), nil); r.status != 200 || !bytes.Contains(r.body, []byte(slashed)) {
		t.Errorf("GET /runs/%s: %d %s", url.PathEscape("a/b c%"), r.status, r.body)
	}

	for _, rt := range []struct {
		method, path string
		status       int
	}{
		{"GET", "", 200}, {"POST", "/pause", 200}, {"POST", "/resume", 200}, {"DELETE", "", 204},
	} {
		var e errorEnvelope
		unknown := b.do(t, rt.method, "/api/v1/deployments/ghost"+rt.path, nil)
		unknown.decode(t, &e)
		if unknown.status != 404 || !strings.Contains(e.Error.Message, `no deployment named "ghost"`) {
			t.Errorf("%s /deployments/ghost%s: %d %s", rt.method, rt.path, unknown.status, unknown.body)
		}
		r := b.do(t, rt.method, "/api/v1/deployments/named-dep"+rt.path, nil)
		if r.status != rt.status || (rt.status == 200 && !bytes.Contains(r.body, []byte(dep.ID))) {
			t.Errorf("%s /deployments/named-dep%s: %d %s", rt.method, rt.path, r.status, r.body)
		}
	}
	if r := b.do(t, "GET", "/api/v1/deployments/named-dep", nil); r.status != 404 {
		t.Errorf("a deleted deployment's name still resolves: %d %s", r.status, r.body)
	}
}

// TestAPIEventsCarryTheAuditTrailFields: the global log shows each event of
// a run and its task runs as the run's audit trail does, with the run's id
// and name, the task's name and the states before and after, also when the
// page holds a task run's event without its run's.
func TestAPIEventsCarryTheAuditTrailFields(t *testing.T) {
	t.Parallel()
	b := setup(t)
	run := b.log.CreateRun(projtest.RunSpec{Name: "hello-13e2af11"})
	run.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
	run.Succeed("load", 1, "rows")
	run.Task("left", domain.TaskRunStarted{Attempt: 1, Worker: "w1"},
		domain.TaskRunFailed{AttemptFailure: domain.AttemptFailure{Attempt: 1, Error: "boom"}})
	other := b.log.CreateRun(projtest.RunSpec{Name: "other"})
	other.Complete()
	b.sync(t)

	var trail projections.Page[projections.Event]
	b.do(t, "GET", "/api/v1/runs/"+run.ID.String()+"/events", nil).decode(t, &trail)
	byPosition := map[int64]projections.Event{}
	for _, e := range trail.Items {
		byPosition[e.Position] = e
		if e.FlowRunID == nil || *e.FlowRunID != run.ID || e.FlowRunName != "hello-13e2af11" || e.ToState == nil {
			t.Fatalf("audit trail event lacks its run or state: %+v", e)
		}
	}
	// pages of 3 put task runs' events on pages without their run's
	all := b.globalLog(t, 3)
	matched, tasks := 0, 0
	for _, e := range all {
		want, inTrail := byPosition[e.Position]
		if !inTrail {
			if e.StreamType == domain.StreamTaskRun && (e.FlowRunID == nil || *e.FlowRunID != other.ID || e.FlowRunName != "other" || e.TaskName == "") {
				t.Errorf("event of the other run lacks its run or task: %+v", e)
			}
			continue
		}
		matched++
		if e.TaskName != "" {
			tasks++
		}
		got, _ := json.Marshal(e)
		wantJSON, _ := json.Marshal(want)
		if !bytes.Equal(got, wantJSON) {
			t.Errorf("event %d in the global log:\n%s\nin the audit trail:\n%s", e.Position, got, wantJSON)
		}
	}
	if matched != len(trail.Items) || tasks == 0 {
		t.Fatalf("the global log shows %d of the run's %d events (%d of task runs)", matched, len(trail.Items), tasks)
	}
	for _, e := range all {
		if e.Type == "TaskRunFailed" && (e.TaskName != "left" || e.FromState == nil || e.FromState.Type != domain.Running || e.ToState.Type != domain.Failed) {
			t.Errorf("the failure: %+v", e)
		}
	}
}
