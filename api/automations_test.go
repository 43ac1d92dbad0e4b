package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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
	"github.com/ordoflow/ordo/internal/hooktest"
	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/jobs"
	"github.com/ordoflow/ordo/projections"
)

// automationsAPI starts the API with the automations service and a River
// client that delivers, on a fresh database; maxAttempts bounds a delivery's
// attempts (0: the default). Runs are started and cancelled through the
// API, and the projector and the automation consumer run.
func automationsAPI(t *testing.T, maxAttempts ...int) bundle {
	t.Helper()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, domain.NewRegistry())
	reg := prometheus.NewRegistry()
	proj, err := projections.NewProjector(store, projections.ProjectorOptions{Registerer: reg, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	delivery := automations.DeliveryOptions{AllowPrivate: true, Backoff: 10 * time.Millisecond, Getenv: func(string) string { return "secret" }}
	if len(maxAttempts) > 0 {
		delivery.MaxAttempts = maxAttempts[0]
	}
	rc, err := automations.NewRiverClient(pool, delivery)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := rc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	jobsClient, err := jobs.NewInsertClient(pool)
	if err != nil {
		t.Fatal(err)
	}
	svc := commands.NewService(pool, store, jobs.RiverEnqueuer(jobsClient), commands.ServiceOptions{})
	consumer := automations.NewConsumer(store, rc, automations.ConsumerOptions{PollInterval: 20 * time.Millisecond})
	var running sync.WaitGroup
	running.Add(2)
	go func() { defer running.Done(); _ = proj.Run(ctx) }()
	go func() { defer running.Done(); _ = consumer.Run(ctx) }()
	h, err := api.New(api.Options{
		Deployments: commands.NewDeploymentCommands(store),
		Runs:        testRuns{runs: commands.NewDeploymentRuns(svc), svc: svc},
		Reads:       projections.NewReader(store),
		Projection:  proj,
		Pool:        pool,
		Registry:    reg,
		Automations: automations.NewService(store, rc, automations.ServiceOptions{AllowPrivate: true, RetryAttempts: delivery.MaxAttempts}),
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
		running.Wait()
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

// A delivery that ends dead (its receiver answered 500 to every attempt) is
// retried through the API once the receiver is back: the same firing id
// reaches it, its attempts go on being numbered, and it ends delivered; the
// run's page of firings shows it, and /metrics counts it.
func TestAutomationDeliveryRetryAndRunFirings(t *testing.T) {
	t.Parallel()
	b := automationsAPI(t, 2)
	hook := hooktest.New(t, true)

	body := automationBody("cancelled runs", hook.URL)
	body["trigger"] = map[string]any{"type": "state", "of": "flow_run", "states": []string{"CANCELLED"}}
	body["filter"] = map[string]any{"deployments": []string{"retry_*"}}
	var a struct {
		ID string `json:"id"`
	}
	r := b.do(t, "POST", "/api/v1/automations", body)
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	r.decode(t, &a)
	r = b.do(t, "POST", "/api/v1/deployments", deploymentBody("retry_me", nil))
	var d struct {
		ID string `json:"id"`
	}
	r.decode(t, &d)
	var run struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	r = b.do(t, "POST", "/api/v1/deployments/"+d.ID+"/runs", map[string]any{"scheduled_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	if r.status != http.StatusCreated {
		t.Fatalf("start a run: %d %s", r.status, r.body)
	}
	r.decode(t, &run)
	if r := b.do(t, "POST", "/api/v1/runs/"+run.ID+"/cancel", nil); r.status != http.StatusOK {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}

	type delivery struct {
		FiringID       string `json:"firing_id"`
		Action         int    `json:"action"`
		Status         string `json:"status"`
		Attempts       int    `json:"attempts"`
		LastStatusCode *int   `json:"last_status_code"`
		FlowRunID      string `json:"flow_run_id"`
		AttemptList    []struct {
			Attempt    int  `json:"attempt"`
			StatusCode *int `json:"status_code"`
		} `json:"attempt_list"`
	}
	waitDelivery := func(status string) delivery {
		t.Helper()
		var page struct {
			Items []delivery `json:"items"`
		}
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
			r := b.do(t, "GET", "/api/v1/automations/"+a.ID+"/deliveries", nil)
			r.decode(t, &page)
			if len(page.Items) == 1 && page.Items[0].Status == status {
				return page.Items[0]
			}
			if time.Now().After(deadline) {
				t.Fatalf("waited for a %s delivery: %s", status, r.body)
			}
		}
	}
	dead := waitDelivery("dead")
	if dead.Attempts != 2 || dead.FlowRunID != run.ID || *dead.LastStatusCode != http.StatusInternalServerError {
		t.Fatalf("dead delivery: %+v", dead)
	}
	retryPath := "/api/v1/automations/" + a.ID + "/deliveries/" + dead.FiringID + "/0/retry"
	if r := b.do(t, "POST", "/api/v1/automations/"+a.ID+"/deliveries/"+a.ID+"/0/retry", nil); r.status != http.StatusNotFound {
		t.Fatalf("retry of no delivery: %d %s", r.status, r.body)
	}
	if r := b.do(t, "POST", "/api/v1/automations/"+a.ID+"/deliveries/"+dead.FiringID+"/x/retry", nil); r.status != http.StatusBadRequest {
		t.Fatalf("retry of action x: %d %s", r.status, r.body)
	}

	hook.Down.Store(false)
	r = b.do(t, "POST", "/api/v1/automations/cancelled%20runs/deliveries/"+dead.FiringID+"/0/retry", nil)
	var retried delivery
	r.decode(t, &retried)
	if r.status != http.StatusAccepted || retried.FiringID != dead.FiringID || retried.Status != "pending" {
		t.Fatalf("retry: %d %s", r.status, r.body)
	}
	done := waitDelivery("delivered")
	if done.Attempts != 3 || len(done.AttemptList) != 3 || done.AttemptList[2].Attempt != 3 || *done.LastStatusCode != http.StatusOK {
		t.Fatalf("delivered: %+v", done)
	}
	got := hook.Keys()
	if len(got) != 3 {
		t.Fatalf("%d requests, want 3: %v", len(got), got)
	}
	for _, k := range got {
		if k != dead.FiringID {
			t.Fatalf("idempotency keys %v, want each %s", got, dead.FiringID)
		}
	}
	if r := b.do(t, "POST", retryPath, nil); r.status != http.StatusConflict || !strings.Contains(string(r.body), "delivered") {
		t.Fatalf("retry of a delivered one: %d %s", r.status, r.body)
	}

	var firings struct {
		Items []struct {
			FiringID       string     `json:"firing_id"`
			AutomationName string     `json:"automation_name"`
			TriggerType    string     `json:"trigger_type"`
			Deliveries     []delivery `json:"deliveries"`
		} `json:"items"`
	}
	for _, ref := range []string{run.ID, run.Name} {
		r = b.do(t, "GET", "/api/v1/runs/"+ref+"/firings", nil)
		r.decode(t, &firings)
		if r.status != 200 || len(firings.Items) != 1 || firings.Items[0].FiringID != dead.FiringID || firings.Items[0].AutomationName != "cancelled runs" ||
			firings.Items[0].TriggerType != "FlowRunCancelled" || len(firings.Items[0].Deliveries) != 1 || firings.Items[0].Deliveries[0].Status != "delivered" {
			t.Fatalf("firings of %s: %d %s", ref, r.status, r.body)
		}
	}
	if r := b.do(t, "GET", "/api/v1/runs/no-such-run/firings", nil); r.status != http.StatusNotFound {
		t.Fatalf("firings of no run: %d %s", r.status, r.body)
	}

	r = b.do(t, "GET", "/metrics", nil)
	for _, want := range []string{`ordo_automation_deliveries{status="delivered"} 1`, `ordo_automation_deliveries{status="dead"} 0`, "ordo_automation_consumer_lag_events "} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
}
