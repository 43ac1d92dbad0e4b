package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ordoflow/ordo/api"
	"github.com/ordoflow/ordo/automations"
	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/apicontract"
	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/projections"
)

// automationsAPI starts the API with the automations service and a River
// client that delivers, on a fresh database.
func automationsAPI(t *testing.T) bundle {
	t.Helper()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, domain.NewRegistry())
	reg := prometheus.NewRegistry()
	proj, err := projections.NewProjector(store, projections.ProjectorOptions{Registerer: reg, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := automations.NewRiverClient(pool, automations.DeliveryOptions{AllowPrivate: true, Backoff: 10 * time.Millisecond,
		Getenv: func(string) string { return "secret" }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := rc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	h, err := api.New(api.Options{
		Deployments: commands.NewDeploymentCommands(store),
		Reads:       projections.NewReader(store),
		Projection:  proj,
		Pool:        pool,
		Registry:    reg,
		Automations: automations.NewService(store, rc, automations.ServiceOptions{AllowPrivate: true}),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(apicontract.Handler(t, h))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		stop, done := context.WithTimeout(context.Background(), 10*time.Second)
		defer done()
		_ = rc.Stop(stop)
		store.Close()
	})
	return bundle{url: srv.URL, pool: pool, store: store, proj: proj}
}

func automationBody(name, url string) map[string]any {
	return map[string]any{
		"name":    name,
		"trigger": map[string]any{"type": "state", "of": "flow_run", "states": []string{"FAILED", "CRASHED"}},
		"filter":  map[string]any{"deployments": []string{"model_*"}, "tags": []string{"prod"}},
		"actions": []any{map[string]any{"type": "webhook", "url": url, "secret_env": "ORDO_HOOK_SECRET"}},
	}
}

func TestAutomationsAPI(t *testing.T) {
	t.Parallel()
	b := automationsAPI(t)
	var hits atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(automations.HeaderIdempotencyKey) != "" && strings.HasPrefix(r.Header.Get(automations.HeaderSignature), "t=") {
			hits.Add(1)
		}
	}))
	t.Cleanup(hook.Close)

	r := b.do(t, "POST", "/api/v1/automations", automationBody("ml failures", hook.URL))
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	var a struct {
		ID      string `json:"id"`
		Name    string `json:"name"`
		Paused  bool   `json:"paused"`
		Version int    `json:"version"`
		Filter  struct {
			Tags []string `json:"tags"`
		} `json:"filter"`
	}
	r.decode(t, &a)
	if a.Name != "ml failures" || a.Version != 1 {
		t.Fatalf("created %s", r.body)
	}

	for name, c := range map[string]struct {
		body   any
		status int
		want   string
	}{
		"SameName": {automationBody("ml failures", hook.URL), http.StatusConflict, "ml failures"},
		"UnknownTrigger": {func() any {
			m := automationBody("x", hook.URL)
			m["trigger"] = map[string]any{"type": "sometimes"}
			return m
		}(), http.StatusBadRequest, "trigger.type"},
		"UnknownField": {func() any { m := automationBody("x", hook.URL); m["secret"] = "s"; return m }(), http.StatusBadRequest, "secret"},
		"UnknownAction": {func() any {
			m := automationBody("x", hook.URL)
			m["actions"] = []any{map[string]any{"type": "carrier_pigeon"}}
			return m
		}(), http.StatusBadRequest, "one of webhook"},
		"BadTemplate": {func() any {
			m := automationBody("x", hook.URL)
			m["actions"] = []any{map[string]any{"type": "slack", "url": hook.URL, "text": "{{.FlowRun.Nmae}}"}}
			return m
		}(), http.StatusBadRequest, `actions[0].text: bad template`},
	} {
		if r := b.do(t, "POST", "/api/v1/automations", c.body); r.status != c.status || !strings.Contains(string(r.body), c.want) {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}

	if r := b.do(t, "GET", "/api/v1/automations", nil); r.status != 200 || !strings.Contains(string(r.body), a.ID) {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	if r := b.do(t, "GET", "/api/v1/automations/ml%20failures", nil); r.status != 200 || !strings.Contains(string(r.body), a.ID) {
		t.Fatalf("get by name: %d %s", r.status, r.body)
	}
	changed := automationBody("ml failures", hook.URL)
	changed["filter"] = map[string]any{"tags": []string{"staging"}}
	r = b.do(t, "PUT", "/api/v1/automations/"+a.ID, changed)
	r.decode(t, &a)
	if r.status != 200 || a.Version != 2 || len(a.Filter.Tags) != 1 || a.Filter.Tags[0] != "staging" {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	r = b.do(t, "POST", "/api/v1/automations/"+a.ID+"/pause", nil)
	r.decode(t, &a)
	if r.status != 200 || !a.Paused {
		t.Fatalf("pause: %d %s", r.status, r.body)
	}
	r = b.do(t, "POST", "/api/v1/automations/"+a.ID+"/resume", nil)
	r.decode(t, &a)
	if r.status != 200 || a.Paused {
		t.Fatalf("resume: %d %s", r.status, r.body)
	}

	r = b.do(t, "POST", "/api/v1/automations/"+a.ID+"/test", nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("test: %d %s", r.status, r.body)
	}
	var fired struct {
		FiringID string `json:"firing_id"`
	}
	r.decode(t, &fired)
	var page struct {
		Items []struct {
			FiringID string `json:"firing_id"`
			Status   string `json:"status"`
		} `json:"items"`
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		r = b.do(t, "GET", "/api/v1/automations/"+a.ID+"/deliveries", nil)
		r.decode(t, &page)
		if r.status == 200 && len(page.Items) == 1 && page.Items[0].Status == "delivered" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries: %d %s", r.status, r.body)
		}
	}
	if page.Items[0].FiringID != fired.FiringID || hits.Load() != 1 {
		t.Fatalf("firing %s, delivered %s, %d signed requests", fired.FiringID, page.Items[0].FiringID, hits.Load())
	}

	if r := b.do(t, "DELETE", "/api/v1/automations/"+a.ID, nil); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := b.do(t, "GET", "/api/v1/automations/"+a.ID, nil); r.status != http.StatusNotFound {
		t.Fatalf("get after delete: %d %s", r.status, r.body)
	}
	if r := b.do(t, "POST", "/api/v1/automations", automationBody("ml failures", hook.URL)); r.status != http.StatusCreated {
		t.Fatalf("the name of a deleted automation is free again: %d %s", r.status, r.body)
	}
}
