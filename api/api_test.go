package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ordoflow/ordo/api"
	"github.com/ordoflow/ordo/automations"
	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/apicontract"
	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/jobs"
	"github.com/ordoflow/ordo/projections"
	"github.com/ordoflow/ordo/projections/projtest"
)

type bundle struct {
	url   string
	pool  *pgxpool.Pool
	store *eventstore.Store
	proj  *projections.Projector
	log   *projtest.Log
	blobs *blobstore.Dir // where the API reads outputs from
}

// newBlobs is a blob store of the test's own.
func newBlobs(t testing.TB) *blobstore.Dir {
	t.Helper()
	d, err := blobstore.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func setup(t *testing.T) bundle { return newBundle(t, false) }

// waitProjectorStarted waits for the projector started on pool to record
// its checkpoint row, which it does as it starts, so that tests counting
// rows before and after requests see only the rows the requests wrote.
func waitProjectorStarted(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		var n int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM projection_checkpoints`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the projector did not start within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newBundle starts the API on a fresh database with a running projector;
// withRiver also gives it a River client, as `ordo server` does, for the
// work-queue controls and River UI.
func newBundle(t *testing.T, withRiver bool) bundle {
	t.Helper()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, domain.NewRegistry())
	reg := prometheus.NewRegistry()
	proj, err := projections.NewProjector(store, projections.ProjectorOptions{Registerer: reg, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = proj.Run(ctx) }()
	waitProjectorStarted(t, pool)
	blobs := newBlobs(t)
	opts := api.Options{
		Deployments: commands.NewDeploymentCommands(store),
		Reads:       projections.NewReader(store),
		Projection:  proj,
		Blobs:       blobs,
		Pool:        pool,
		Registry:    reg,
	}
	// not started: test firings queue their deliveries, nothing sends them
	autoRiver, err := automations.NewRiverClient(pool, automations.DeliveryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	opts.Automations = automations.NewService(store, autoRiver, automations.ServiceOptions{})
	if withRiver {
		if opts.River, err = jobs.NewInsertClient(pool); err != nil {
			t.Fatal(err)
		}
		opts.Context = ctx
	}
	h, err := api.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(apicontract.Handler(t, h))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
		store.Close()
	})
	return bundle{url: srv.URL, pool: pool, store: store, proj: proj, log: projtest.NewLog(t, store), blobs: blobs}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (b bundle) do(t *testing.T, method, path string, body any, header ...string) response {
	t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	case []byte:
		rd = bytes.NewReader(v)
	default:
		j, _ := json.Marshal(v)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, b.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: out}
}

func (b bundle) eventCount(t *testing.T) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// globalLog pages the whole global log, limit events a page, following
// next_cursor. The log is read gap-free, and the server works out for each
// page the part of it that no running transaction can still change: a
// transaction of another database that ends while a page is read can hold
// that page back, short of events that committed long before. So a short
// page is read on from its last cursor until the pages hold every event
// committed (for at most 20 s, after which the caller's checks fail).
func (b bundle) globalLog(t *testing.T, limit int) []projections.Event {
	t.Helper()
	total := b.eventCount(t)
	deadline := time.Now().Add(20 * time.Second)
	var all []projections.Event
	after := ""
	for {
		var p projections.Page[projections.Event]
		b.do(t, "GET", fmt.Sprintf("/api/v1/events?limit=%d&after=%s", limit, url.QueryEscape(after)), nil).decode(t, &p)
		all = append(all, p.Items...)
		if p.NextCursor != nil {
			after = *p.NextCursor
			continue
		}
		if n := len(p.Items); n > 0 {
			after = p.Items[n-1].Cursor
		}
		if len(all) >= total || time.Now().After(deadline) {
			return all
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fullEventPage gets path, a page of the global log, until it holds want
// events (for at most 20 s): a page can come back short while a
// transaction of another database ends (see globalLog).
func (b bundle) fullEventPage(t *testing.T, path string, want int) response {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := b.do(t, "GET", path, nil)
		var page projections.Page[projections.Event]
		if r.status != http.StatusOK || time.Now().After(deadline) {
			return r
		}
		if r.decode(t, &page); len(page.Items) >= want {
			return r
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (b bundle) sync(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.proj.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

func deploymentBody(name string, edit func(map[string]any)) map[string]any {
	d := map[string]any{
		"name":        name,
		"description": "train and validate the house-price model",
		"work_queue":  "ml",
		"tags":        []string{"prod"},
		"parameters":  map[string]any{"table": "houses", "test_size": 0.2},
		"schedule":    map[string]any{"interval_seconds": 300},
		"flow": map[string]any{"name": "ml-pipeline", "tasks": []any{
			map[string]any{"name": "load_data", "command": []string{"python3", "load.py"}, "retries": 3, "retry_delay_seconds": 5},
			map[string]any{"name": "train", "command": []string{"python3", "train.py"}, "depends_on": []string{"load_data"}},
		}},
	}
	if edit != nil {
		edit(d)
	}
	return d
}

type errorEnvelope struct {
	Error struct {
		Code    string          `json:"code"`
		Message string          `json:"message"`
		Details []domain.Detail `json:"details"`
	} `json:"error"`
}

func TestAPIDeploymentLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t)

	created := b.do(t, "POST", "/api/v1/deployments", deploymentBody("model_training", nil))
	if created.status != http.StatusCreated {
		t.Fatalf("create: %d %s", created.status, created.body)
	}
	var d projections.Deployment
	created.decode(t, &d)
	if d.Version != 1 || d.Name != "model_training" || d.WorkQueue != "ml" || d.Paused || d.Schedule == nil || d.Schedule.IntervalSeconds != 300 || len(d.Flow.Tasks) != 2 {
		t.Fatalf("created: %+v", d)
	}
	// read-your-writes: the very next GET sees it
	got := b.do(t, "GET", "/api/v1/deployments/"+d.ID.String(), nil)
	if got.status != http.StatusOK {
		t.Fatalf("get: %d %s", got.status, got.body)
	}
	var raw map[string]any
	got.decode(t, &raw)
	for _, field := range []string{"id", "name", "version", "description", "work_queue", "tags", "parameters", "schedule", "paused", "flow", "next_runs", "created_at", "updated_at"} {
		if _, ok := raw[field]; !ok {
			t.Errorf("deployment lacks %q", field)
		}
	}

	same := b.do(t, "POST", "/api/v1/deployments", deploymentBody("model_training", nil))
	var unchanged projections.Deployment
	same.decode(t, &unchanged)
	if same.status != http.StatusOK || unchanged.Version != 1 || unchanged.ID != d.ID {
		t.Fatalf("saving the same spec again: %d version %d", same.status, unchanged.Version)
	}

	updated := b.do(t, "POST", "/api/v1/deployments", deploymentBody("model_training", func(m map[string]any) {
		m["description"] = "new words"
		m["tags"] = []string{"prod", "gpu"}
	}))
	var v2 projections.Deployment
	updated.decode(t, &v2)
	if updated.status != http.StatusOK || v2.Version != 2 || v2.ID != d.ID || v2.Description != "new words" || !slices.Equal(v2.Tags, []string{"prod", "gpu"}) {
		t.Fatalf("update: %d %+v", updated.status, v2)
	}
	evs := b.fullEventPage(t, "/api/v1/events?type=DeploymentUpdated", 1) // the log is read gap-free
	var page struct {
		Items []struct {
			Data     domain.DeploymentUpdated `json:"data"`
			Metadata map[string]string        `json:"metadata"`
		} `json:"items"`
	}
	evs.decode(t, &page)
	if len(page.Items) != 1 || !slices.Equal(page.Items[0].Data.Changed, []string{"description", "tags"}) || page.Items[0].Metadata["actor"] != "api" {
		t.Fatalf("update events: %s", evs.body)
	}

	paused := b.do(t, "POST", "/api/v1/deployments/"+d.ID.String()+"/pause", nil)
	var p projections.Deployment
	paused.decode(t, &p)
	if paused.status != http.StatusOK || !p.Paused {
		t.Fatalf("pause: %d %s", paused.status, paused.body)
	}
	list := b.do(t, "GET", "/api/v1/deployments?name=TRAIN", nil)
	var lp projections.Page[projections.Deployment]
	list.decode(t, &lp)
	if len(lp.Items) != 1 || !lp.Items[0].Paused || lp.NextCursor != nil {
		t.Fatalf("list after pause: %s", list.body)
	}
	resumed := b.do(t, "POST", "/api/v1/deployments/"+d.ID.String()+"/resume", "{}")
	resumed.decode(t, &p)
	if resumed.status != http.StatusOK || p.Paused {
		t.Fatalf("resume: %d %s", resumed.status, resumed.body)
	}

	if del := b.do(t, "DELETE", "/api/v1/deployments/"+d.ID.String(), nil); del.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", del.status, del.body)
	}
	if gone := b.do(t, "GET", "/api/v1/deployments/"+d.ID.String(), nil); gone.status != http.StatusNotFound {
		t.Fatalf("get after delete: %d", gone.status)
	}
	if again := b.do(t, "POST", "/api/v1/deployments/"+d.ID.String()+"/pause", nil); again.status != http.StatusNotFound {
		t.Fatalf("pause after delete: %d", again.status)
	}
	// the name is free again: a new deployment with a new id
	reborn := b.do(t, "POST", "/api/v1/deployments", deploymentBody("model_training", nil))
	var d2 projections.Deployment
	reborn.decode(t, &d2)
	if reborn.status != http.StatusCreated || d2.ID == d.ID || d2.Version != 1 {
		t.Fatalf("create after delete: %d %+v", reborn.status, d2)
	}
}

func TestAPIBadInputsWriteNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	valid, _ := json.Marshal(deploymentBody("ok", nil))
	if r := b.do(t, "POST", "/api/v1/deployments", valid); r.status != http.StatusCreated {
		t.Fatalf("setup: %d %s", r.status, r.body)
	}
	b.sync(t)
	var existing projections.Page[projections.Deployment]
	b.do(t, "GET", "/api/v1/deployments", nil).decode(t, &existing)
	id := existing.Items[0].ID.String()
	before := b.eventCount(t)

	withEdit := func(edit func(map[string]any)) map[string]any { return deploymentBody("bad", edit) }
	big := append([]byte(`{"name":"big","description":"`), bytes.Repeat([]byte("x"), 2<<20)...)
	big = append(big, `"}`...)
	tests := []struct {
		name, method, path string
		body               any
		status             int
		code               string
		field              string // a detail must name it
		inMessage          string
	}{
		{"MalformedJSON", "POST", "/api/v1/deployments", `{"name": "x", `, 400, "invalid", "", "JSON"},
		{"UnknownField", "POST", "/api/v1/deployments", withEdit(func(m map[string]any) { m["colour"] = "red" }), 400, "invalid", "colour", ""},
		{"UnknownTaskField", "POST", "/api/v1/deployments", withEdit(func(m map[string]any) {
			m["flow"].(map[string]any)["tasks"].([]any)[0].(map[string]any)["retires"] = 2
		}), 400, "invalid", "flow.tasks[0].retires", ""},
		{"Cycle", "POST", "/api/v1/deployments", withEdit(func(m map[string]any) {
			m["flow"].(map[string]any)["tasks"].([]any)[0].(map[string]any)["depends_on"] = []string{"train"}
		}), 400, "invalid", "", "cycle"},
		{"UnknownDependency", "POST", "/api/v1/deployments", withEdit(func(m map[string]any) {
			m["flow"].(map[string]any)["tasks"].([]any)[1].(map[string]any)["depends_on"] = []string{"nope"}
		}), 400, "invalid", "flow.tasks[1].depends_on[0]", ""},
		{"BadCron", "POST", "/api/v1/deployments", withEdit(func(m map[string]any) { m["schedule"] = map[string]any{"cron": "every day at noon"} }), 400, "invalid", "schedule.cron", ""},
		{"WrongType", "POST", "/api/v1/deployments", withEdit(func(m map[string]any) { m["tags"] = "prod" }), 400, "invalid", "tags", ""},
		{"OversizeBody", "POST", "/api/v1/deployments", big, 413, "too_large", "", "1048576"},
		{"UnknownDeployment", "GET", "/api/v1/deployments/" + uuid.NewString(), nil, 404, "not_found", "", ""},
		{"MalformedID", "GET", "/api/v1/deployments/not-a-uuid", nil, 404, "not_found", "", ""},
		{"PauseUnknown", "POST", "/api/v1/deployments/" + uuid.NewString() + "/pause", nil, 404, "not_found", "", ""},
		{"DeleteUnknown", "DELETE", "/api/v1/deployments/" + uuid.NewString(), nil, 404, "not_found", "", ""},
		{"BodyOnPause", "POST", "/api/v1/deployments/" + id + "/pause", `{"really": true}`, 400, "invalid", "really", ""},
		{"WrongMethod", "PUT", "/api/v1/deployments", valid, 405, "method_not_allowed", "", "PUT"},
		{"WrongMethodOnID", "PATCH", "/api/v1/deployments/" + id, valid, 405, "method_not_allowed", "", ""},
		{"UnknownRoute", "GET", "/api/v1/nothing-here", nil, 404, "not_found", "", ""},
		{"UnknownRun", "GET", "/api/v1/runs/" + uuid.NewString(), nil, 404, "not_found", "", ""},
		{"UnknownRunGraph", "GET", "/api/v1/runs/" + uuid.NewString() + "/graph", nil, 404, "not_found", "", ""},
		{"UnknownRunEvents", "GET", "/api/v1/runs/" + uuid.NewString() + "/events", nil, 404, "not_found", "", ""},
		{"BadState", "GET", "/api/v1/runs?state=DONE", nil, 400, "invalid", "state", ""},
		{"LimitTooHigh", "GET", "/api/v1/runs?limit=500", nil, 400, "invalid", "limit", ""},
		{"UnknownQueryParameter", "GET", "/api/v1/runs?stat=FAILED", nil, 400, "invalid", "stat", ""},
		{"BadSince", "GET", "/api/v1/runs?since=yesterday", nil, 400, "invalid", "since", ""},
		{"BadCursor", "GET", "/api/v1/runs?cursor=zzz", nil, 400, "invalid", "cursor", ""},
		{"HistoryWithoutAt", "GET", "/api/v1/runs/" + uuid.NewString() + "/history", nil, 400, "invalid", "at", ""},
		{"BadEventCursor", "GET", "/api/v1/events?after=soon", nil, 400, "invalid", "after", ""},
		{"RunsNotImplemented", "POST", "/api/v1/deployments/" + id + "/runs", `{}`, 501, "not_implemented", "", ""},
		{"CancelNotImplemented", "POST", "/api/v1/runs/" + uuid.NewString() + "/cancel", nil, 501, "not_implemented", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(t, tt.method, tt.path, tt.body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			var env errorEnvelope
			r.decode(t, &env)
			if env.Error.Code != tt.code || env.Error.Message == "" || env.Error.Details == nil {
				t.Fatalf("envelope %s", r.body)
			}
			if tt.field != "" && !slices.ContainsFunc(env.Error.Details, func(d domain.Detail) bool { return d.Field == tt.field }) {
				t.Errorf("no detail names %q: %s", tt.field, r.body)
			}
			if tt.inMessage != "" && !strings.Contains(env.Error.Message+fmt.Sprint(env.Error.Details), tt.inMessage) {
				t.Errorf("message does not mention %q: %s", tt.inMessage, r.body)
			}
			for _, d := range env.Error.Details {
				if said := d.Field + ": " + d.Message; strings.Count(env.Error.Message, said) > 1 {
					t.Errorf("the message says %q twice: %s", said, r.body)
				}
			}
		})
	}
	if after := b.eventCount(t); after != before {
		t.Fatalf("bad requests wrote %d events", after-before)
	}
}

func TestAPIIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := deploymentBody("idem", nil)
	first := b.do(t, "POST", "/api/v1/deployments", body, "Idempotency-Key", "k1")
	if first.status != http.StatusCreated {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	n := b.eventCount(t)
	// a changed spec under the same key would be a new version: the key
	// guards against the retry, so the body must be the same request
	second := b.do(t, "POST", "/api/v1/deployments", body, "Idempotency-Key", "k1")
	if second.status != http.StatusCreated || !bytes.Equal(second.body, first.body) || second.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: %d %s", second.status, second.body)
	}
	other := b.do(t, "POST", "/api/v1/deployments", deploymentBody("idem", func(m map[string]any) { m["description"] = "other" }), "Idempotency-Key", "k1")
	if other.status != http.StatusConflict {
		t.Fatalf("same key, other request: %d %s", other.status, other.body)
	}
	if b.eventCount(t) != n {
		t.Fatal("a replayed request wrote events")
	}
	bad := b.do(t, "POST", "/api/v1/deployments", `{"nope":1}`, "Idempotency-Key", "k2")
	again := b.do(t, "POST", "/api/v1/deployments", `{"nope":1}`, "Idempotency-Key", "k2")
	if bad.status != 400 || again.status != 400 || !bytes.Equal(bad.body, again.body) {
		t.Fatalf("a refused request is replayed as refused: %d %d", bad.status, again.status)
	}
}

// runFixture writes runs straight into the log.
type runFixture struct {
	runs map[string]*projtest.Run
	at   map[string]time.Time
}

func writeRuns(t *testing.T, b bundle) runFixture {
	t.Helper()
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f := runFixture{runs: map[string]*projtest.Run{}, at: map[string]time.Time{}}
	deps := map[string]uuid.UUID{"etl": uuid.New(), "ml": uuid.New()}
	for i := range 12 {
		dep := "etl"
		queue, tags := "cpu", []string{"nightly"}
		if i%3 == 0 {
			dep, queue, tags = "ml", "gpu", []string{"prod", "ml"}
		}
		name := fmt.Sprintf("%s-run-%02d", dep, i)
		at := base.Add(time.Duration(i) * time.Minute)
		if i == 5 {
			at = base.Add(4 * time.Minute) // same scheduled time as run 4: the id breaks the tie
		}
		r := b.log.CreateRun(projtest.RunSpec{Name: name, DeploymentID: deps[dep], DeploymentName: dep, WorkQueue: queue, Tags: tags, ScheduledAt: at})
		switch i % 4 {
		case 1:
			r.Complete()
		case 2:
			r.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{}, domain.FlowRunFailed{Message: "load failed"})
		}
		f.runs[name], f.at[name] = r, at
	}
	b.sync(t)
	return f
}

func TestAPIRunsListFiltersAndPaging(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f := writeRuns(t, b)

	names := func(path string) []string {
		t.Helper()
		r := b.do(t, "GET", path, nil)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		var p projections.Page[projections.FlowRun]
		r.decode(t, &p)
		var out []string
		for _, run := range p.Items {
			out = append(out, run.Name)
		}
		return out
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"state=COMPLETED", []string{"ml-run-09", "etl-run-05", "etl-run-01"}},
		{"state=failed,completed&deployment=ml", []string{"ml-run-09", "ml-run-06"}},
		{"deployment=etl&tag=nightly&work_queue=cpu&state=FAILED", []string{"etl-run-10", "etl-run-02"}},
		{"tag=prod&tag=ml", []string{"ml-run-09", "ml-run-06", "ml-run-03", "ml-run-00"}},
		{"tag=prod,nightly", nil},
		{"name=RUN-1", []string{"etl-run-11", "etl-run-10"}},
		{"name=%25", nil}, // LIKE wildcards are literal
		{"work_queue=gpu&since=2026-03-01T12:03:00Z&until=2026-03-01T12:09:00Z", []string{"ml-run-06", "ml-run-03"}},
	}
	for _, tt := range tests {
		if got := names("/api/v1/runs?" + tt.query); !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.query, got, tt.want)
		}
	}
	var all projections.Page[projections.FlowRun]
	b.do(t, "GET", "/api/v1/runs?deployment="+f.runs["ml-run-00"].ID.String(), nil).decode(t, &all)
	if len(all.Items) != 0 {
		t.Errorf("a run id is not a deployment id")
	}

	// keyset paging: pages of 5 walk every run once, newest first, ties by id
	var paged []projections.FlowRun
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		path := "/api/v1/runs?limit=5"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		var p projections.Page[projections.FlowRun]
		b.do(t, "GET", path, nil).decode(t, &p)
		paged = append(paged, p.Items...)
		if p.NextCursor == nil {
			break
		}
		cursor = *p.NextCursor
		// a run written between pages lands where it belongs, not twice
		if pages == 0 {
			b.log.CreateRun(projtest.RunSpec{Name: "late", ScheduledAt: time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC)})
			b.sync(t)
		}
	}
	if len(paged) != 13 {
		t.Fatalf("paged through %d runs, want 13", len(paged))
	}
	for i := 1; i < len(paged); i++ {
		a, c := paged[i-1], paged[i]
		if a.ScheduledAt.Before(c.ScheduledAt) || a.ScheduledAt.Equal(c.ScheduledAt) && a.ID.String() < c.ID.String() {
			t.Fatalf("out of order at %d: %s %s", i, a.Name, c.Name)
		}
	}
	if paged[12].Name != "late" {
		t.Fatalf("last is %s", paged[12].Name)
	}
	var filtered []string
	cursor = ""
	for {
		var p projections.Page[projections.FlowRun]
		path := "/api/v1/runs?deployment=etl&limit=3"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		b.do(t, "GET", path, nil).decode(t, &p)
		for _, r := range p.Items {
			filtered = append(filtered, r.Name)
		}
		if p.NextCursor == nil {
			break
		}
		cursor = *p.NextCursor
	}
	if len(filtered) != 8 || filtered[0] != "etl-run-11" || filtered[7] != "etl-run-01" {
		t.Fatalf("filtered paging: %v", filtered)
	}
}

func TestAPIRunDetailGraphEventsHistory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	run := b.log.CreateRun(projtest.RunSpec{Name: "diamond", Tags: []string{"prod"}, Parameters: map[string]any{"n": 1}})
	run.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
	mid := run.Succeed("load", 1, "rows")
	midAt := mid[len(mid)-1]
	time.Sleep(20 * time.Millisecond)
	run.Succeed("left", 1, "L")
	exit := 2
	run.Task("right", domain.TaskRunStarted{Attempt: 1, Worker: "w2"},
		domain.TaskRunFailed{AttemptFailure: domain.AttemptFailure{Attempt: 1, Error: "boom", ExitCode: &exit}})
	run.Task("join", domain.TaskRunCancelled{NotRun: true})
	run.Flow(domain.FlowRunFailed{Message: "right failed"})
	b.sync(t)
	id := run.ID.String()

	var got map[string]any
	b.do(t, "GET", "/api/v1/runs/"+id, nil).decode(t, &got)
	for _, field := range []string{"id", "name", "deployment_id", "deployment_name", "work_queue", "tags", "parameters", "state", "scheduled_at", "started_at", "ended_at", "run_count", "parent_task_run_id", "result", "task_runs"} {
		if _, ok := got[field]; !ok {
			t.Errorf("run lacks %q", field)
		}
	}
	var detail projections.FlowRun
	b.do(t, "GET", "/api/v1/runs/"+id, nil).decode(t, &detail)
	if detail.State.Type != domain.Failed || detail.State.Message != "right failed" || len(detail.TaskRuns) != 4 {
		t.Fatalf("run: %+v", detail)
	}
	byName := map[string]projections.TaskRun{}
	for _, tr := range detail.TaskRuns {
		byName[tr.TaskName] = tr
	}
	if r := byName["right"]; r.State.Type != domain.Failed || r.Error == nil || *r.Error != "boom" || r.ExitCode == nil || *r.ExitCode != 2 {
		t.Errorf("right: %+v", r)
	}
	if j := byName["join"]; j.State.Name != domain.NameNotRun || !slices.Equal(j.DependsOn, []string{"left", "right"}) {
		t.Errorf("join: %+v", j)
	}
	var raw struct {
		TaskRuns []map[string]any `json:"task_runs"`
	}
	b.do(t, "GET", "/api/v1/runs/"+id, nil).decode(t, &raw)
	for _, field := range []string{"id", "flow_run_id", "task_name", "state", "run_count", "started_at", "ended_at", "result", "error", "cache_key", "depends_on"} {
		if _, ok := raw.TaskRuns[0][field]; !ok {
			t.Errorf("task run lacks %q", field)
		}
	}

	var g projections.Graph
	b.do(t, "GET", "/api/v1/runs/"+id+"/graph", nil).decode(t, &g)
	if len(g.Nodes) != 4 || len(g.Edges) != 4 {
		t.Fatalf("graph: %+v", g)
	}
	edges := map[string]bool{}
	for _, e := range g.Edges {
		edges[e.FromTask+">"+e.ToTask] = true
		if e.From != run.Tasks[e.FromTask] || e.To != run.Tasks[e.ToTask] {
			t.Errorf("edge %+v has the wrong ids", e)
		}
	}
	for _, want := range []string{"load>left", "load>right", "left>join", "right>join"} {
		if !edges[want] {
			t.Errorf("graph lacks %s: %v", want, edges)
		}
	}

	var trail projections.Page[projections.Event]
	b.do(t, "GET", "/api/v1/runs/"+id+"/events", nil).decode(t, &trail)
	if len(trail.Items) != 5+2+2+2+2+1+1 {
		t.Fatalf("audit trail has %d events", len(trail.Items))
	}
	for i, e := range trail.Items {
		if i > 0 && e.Position <= trail.Items[i-1].Position && e.TransactionID == trail.Items[i-1].TransactionID {
			t.Fatalf("audit trail out of order at %d", i)
		}
		if e.ToState == nil || e.Metadata.Actor == "" {
			t.Fatalf("event %d lacks its state or actor: %+v", i, e)
		}
	}
	var failed *projections.Event
	for i, e := range trail.Items {
		if e.Type == "TaskRunFailed" {
			failed = &trail.Items[i]
		}
	}
	if failed == nil || failed.TaskName != "right" || failed.FromState == nil || failed.FromState.Type != domain.Running ||
		failed.ToState.Type != domain.Failed || failed.Metadata.Actor != "worker:w1" || failed.Metadata.Reason != "task right" {
		t.Fatalf("failure in the trail: %+v", failed)
	}
	if first := trail.Items[0]; first.Type != "FlowRunCreated" || first.FromState != nil {
		t.Fatalf("first event: %+v", first)
	}

	history := func(at string) projections.History {
		t.Helper()
		r := b.do(t, "GET", "/api/v1/runs/"+id+"/history?at="+url.QueryEscape(at), nil)
		if r.status != 200 {
			t.Fatalf("history at %s: %d %s", at, r.status, r.body)
		}
		var h projections.History
		r.decode(t, &h)
		return h
	}
	states := func(h projections.History) map[string]domain.StateType {
		m := map[string]domain.StateType{"run": h.Run.State.Type}
		for _, tr := range h.Run.TaskRuns {
			m[tr.TaskName] = tr.State.Type
		}
		return m
	}
	for _, at := range []string{strconv(midAt.Position), eventstore.CheckpointOf(midAt).String(), midAt.RecordedAt.Add(time.Millisecond).Format(time.RFC3339Nano)} {
		h := history(at)
		s := states(h)
		if s["run"] != domain.Running || s["load"] != domain.Completed || s["left"] != domain.Pending || s["right"] != domain.Pending || h.Position != midAt.Position {
			t.Errorf("history at %s: %v (position %d)", at, s, h.Position)
		}
	}
	now := history(time.Now().Add(time.Hour).Format(time.RFC3339))
	if s := states(now); s["run"] != domain.Failed || s["join"] != domain.Cancelled || now.EventCount != len(trail.Items) {
		t.Errorf("history now: %v", s)
	}
	if r := b.do(t, "GET", "/api/v1/runs/"+id+"/history?at=2000-01-01T00:00:00Z", nil); r.status != 404 {
		t.Errorf("history before the run existed: %d", r.status)
	}
}

func strconv(n int64) string { return fmt.Sprint(n) }

func TestAPIEventsPaging(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for range 3 {
		b.log.CreateRun(projtest.RunSpec{}).Complete()
	}
	b.sync(t) // the log is read gap-free: wait until older transactions end
	total := b.eventCount(t)
	seen := b.globalLog(t, 7)
	if len(seen) != total {
		t.Fatalf("paged %d of %d events", len(seen), total)
	}
	var created projections.Page[projections.Event]
	b.fullEventPage(t, "/api/v1/events?type=FlowRunCreated,FlowRunCompleted", 6).decode(t, &created)
	if len(created.Items) != 6 {
		t.Fatalf("type filter: %d events", len(created.Items))
	}
	var fromPos projections.Page[projections.Event]
	b.fullEventPage(t, fmt.Sprintf("/api/v1/events?after=%d", seen[total-2].Position), 1).decode(t, &fromPos)
	if len(fromPos.Items) != 1 || fromPos.Items[0].Position != seen[total-1].Position {
		t.Fatalf("after a position: %+v", fromPos.Items)
	}
}

func TestAPIHealthReadyMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if r := b.do(t, "GET", "/healthz", nil); r.status != 200 {
		t.Fatalf("healthz %d", r.status)
	}
	b.do(t, "POST", "/api/v1/deployments", deploymentBody("m", nil))
	ready := b.do(t, "GET", "/readyz", nil)
	if ready.status != 200 {
		t.Fatalf("readyz: %d %s", ready.status, ready.body)
	}
	m := b.do(t, "GET", "/metrics", nil)
	for _, want := range []string{`ordo_http_requests_total{method="POST",route="/api/v1/deployments",status="201"} 1`, "ordo_projection_lag_events", "ordo_projection_events_applied_total"} {
		if !strings.Contains(string(m.body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	var doc map[string]any
	b.do(t, "GET", "/api/v1/openapi.json", nil).decode(t, &doc)
	if doc["openapi"] != "3.0.3" {
		t.Fatalf("openapi.json: %v", doc["openapi"])
	}
}
