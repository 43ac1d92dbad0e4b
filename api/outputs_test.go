package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/api"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/projections"
	"github.com/ordoflow/ordo/projections/projtest"
)

// putOutput stores content in the bundle's blob store and describes it as
// the output name.
func (b bundle) putOutput(t *testing.T, name, mediaType string, content []byte) domain.Output {
	t.Helper()
	sum := sha256.Sum256(content)
	d := hex.EncodeToString(sum[:])
	if err := b.blobs.Put(context.Background(), d, int64(len(content)), bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	return domain.Output{Name: name, SHA256: d, Size: int64(len(content)), MediaType: mediaType}
}

// outputsRun is a run of two tasks, train then evaluate, both completed
// with outputs and metrics; evaluate, completing later, wins "loss".
func outputsRun(t *testing.T, b bundle, spec projtest.RunSpec) (*projtest.Run, map[string]domain.Output) {
	t.Helper()
	spec.Flow = domain.FlowSpec{Name: "ml", Tasks: []domain.TaskSpec{
		{Name: "train", Command: []string{"true"}},
		{Name: "evaluate", Command: []string{"true"}, DependsOn: []string{"train"}},
	}}
	run := b.log.CreateRun(spec)
	outs := map[string]domain.Output{
		"model":  b.putOutput(t, "model.pkl", "application/octet-stream", []byte("0123456789abcdef")),
		"report": b.putOutput(t, "reports/résumé ü.md", "text/markdown; charset=utf-8", []byte("# Report\n\nr2 is fine\n")),
		"plot":   b.putOutput(t, "plots/residuals.svg", "image/svg+xml", []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`)),
	}
	run.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
	run.Task("train", domain.TaskRunStarted{Attempt: 1, Worker: "w1"},
		domain.TaskRunCompleted{Attempt: 1, Outputs: []domain.Output{outs["model"]}, Metrics: map[string]float64{"loss": 0.5, "epochs": 10}})
	run.Task("evaluate", domain.TaskRunStarted{Attempt: 1, Worker: "w1"},
		domain.TaskRunCompleted{Attempt: 1, Outputs: []domain.Output{outs["report"], outs["plot"]}, Metrics: map[string]float64{"loss": 0.25, "r2": 0.96}})
	run.Flow(domain.FlowRunCompleted{})
	b.sync(t)
	return run, outs
}

func TestRunOutputsAndMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t)
	run, outs := outputsRun(t, b, projtest.RunSpec{Name: "nightly-1"})

	var got projections.FlowRun
	r := b.do(t, "GET", "/api/v1/runs/"+run.ID.String(), nil)
	r.decode(t, &got)
	if want := `{"epochs":10,"loss":0.25,"r2":0.96}`; compactJSON(t, got.Metrics) != want {
		t.Errorf("run metrics %s, want %s (evaluate completed last and wins loss)", got.Metrics, want)
	}
	if len(got.TaskRuns) != 2 || got.TaskRuns[1].Metrics["r2"] != 0.96 || len(got.TaskRuns[1].Outputs) != 2 || got.TaskRuns[0].Outputs[0] != outs["model"] {
		t.Errorf("task runs: %+v", got.TaskRuns)
	}

	// by name, as ids
	var list projections.Page[projections.RunOutput]
	r = b.do(t, "GET", "/api/v1/runs/nightly-1/outputs", nil)
	if r.status != 200 {
		t.Fatalf("outputs: %d %s", r.status, r.body)
	}
	r.decode(t, &list)
	var names []string
	for _, o := range list.Items {
		names = append(names, o.TaskName+":"+o.Name)
		if o.DownloadURL != api.OutputURL(o.TaskRunID, o.Name) {
			t.Errorf("download url %q", o.DownloadURL)
		}
	}
	if want := "train:model.pkl evaluate:plots/residuals.svg evaluate:reports/résumé ü.md"; strings.Join(names, " ") != want {
		t.Errorf("outputs %q, want %q", strings.Join(names, " "), want)
	}
	if r := b.do(t, "GET", "/api/v1/runs/"+uuid.NewString()+"/outputs", nil); r.status != 404 {
		t.Errorf("outputs of no run: %d %s", r.status, r.body)
	}

	// the runs list always carries metrics
	r = b.do(t, "GET", "/api/v1/runs", nil)
	if !strings.Contains(string(r.body), `"metrics":{"r2":0.96,"loss":0.25,"epochs":10}`) && !strings.Contains(string(r.body), `"r2":0.96`) {
		t.Errorf("runs list without metrics: %s", r.body)
	}

	// a reset clears the task run's outputs and metrics, and the run's
	run.Flow(domain.FlowRunRetried{})
	run.Task("evaluate", domain.TaskRunReset{})
	b.sync(t)
	r = b.do(t, "GET", "/api/v1/runs/"+run.ID.String(), nil)
	got = projections.FlowRun{}
	r.decode(t, &got)
	if want := `{"epochs":10,"loss":0.5}`; compactJSON(t, got.Metrics) != want {
		t.Errorf("after the reset: run metrics %s, want %s", got.Metrics, want)
	}
	if ev := got.TaskRuns[1]; len(ev.Outputs) != 0 || len(ev.Metrics) != 0 || !strings.Contains(string(r.body), `"outputs":[]`) {
		t.Errorf("after the reset: evaluate %+v", ev)
	}
}

func compactJSON(t *testing.T, raw []byte) string {
	t.Helper()
	var v map[string]float64
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

func TestTaskRunOutputDownload(t *testing.T) {
	t.Parallel()
	b := setup(t)
	run, outs := outputsRun(t, b, projtest.RunSpec{})
	train, evaluate := run.Tasks["train"], run.Tasks["evaluate"]
	model := api.OutputURL(train, "model.pkl")

	r := b.do(t, "GET", model, nil)
	if r.status != 200 || string(r.body) != "0123456789abcdef" {
		t.Fatalf("download: %d %q", r.status, r.body)
	}
	h := r.header
	if h.Get("ETag") != `"`+outs["model"].SHA256+`"` || h.Get("Content-Length") != "16" || h.Get("Content-Type") != "application/octet-stream" ||
		h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Content-Disposition") != "" {
		t.Errorf("headers %v", h)
	}
	// HEAD: the same headers, no bytes (curl -I)
	if r := b.do(t, "HEAD", model, nil); r.status != 200 || len(r.body) != 0 || r.header.Get("Content-Length") != "16" || r.header.Get("ETag") != h.Get("ETag") {
		t.Errorf("HEAD: %d %q %v", r.status, r.body, r.header)
	}
	if r := b.do(t, "HEAD", model, nil, "Range", "bytes=2-5"); r.status != 206 || r.header.Get("Content-Range") != "bytes 2-5/16" || r.header.Get("Content-Length") != "4" {
		t.Errorf("HEAD with a Range: %d %v", r.status, r.header)
	}
	if r := b.do(t, "GET", model, nil, "If-None-Match", `"`+outs["model"].SHA256+`"`); r.status != 304 || len(r.body) != 0 {
		t.Errorf("If-None-Match: %d %q", r.status, r.body)
	}
	if r := b.do(t, "GET", model, nil, "If-None-Match", `"other"`); r.status != 200 {
		t.Errorf("If-None-Match of another: %d", r.status)
	}

	for _, tc := range []struct{ rng, body, contentRange string }{
		{"bytes=2-5", "2345", "bytes 2-5/16"},
		{"bytes=10-", "abcdef", "bytes 10-15/16"},
		{"bytes=-3", "def", "bytes 13-15/16"},
		{"bytes=14-100", "ef", "bytes 14-15/16"},
	} {
		r := b.do(t, "GET", model, nil, "Range", tc.rng)
		if r.status != 206 || string(r.body) != tc.body || r.header.Get("Content-Range") != tc.contentRange || r.header.Get("Content-Length") != fmt.Sprint(len(tc.body)) {
			t.Errorf("Range %s: %d %q %v", tc.rng, r.status, r.body, r.header)
		}
	}
	r = b.do(t, "GET", model, nil, "Range", "bytes=16-")
	if r.status != 416 || r.header.Get("Content-Range") != "bytes */16" || !strings.Contains(string(r.body), `"range_not_satisfiable"`) {
		t.Errorf("Range past the end: %d %s %v", r.status, r.body, r.header)
	}
	if r := b.do(t, "GET", model, nil, "Range", "bytes=0-1,4-5"); r.status != 200 || len(r.body) != 16 {
		t.Errorf("several ranges are answered with the whole: %d %q", r.status, r.body)
	}
	if r := b.do(t, "GET", model, nil, "Range", "bytes=2-3", "If-Range", `"stale"`); r.status != 200 {
		t.Errorf("If-Range of other content: %d", r.status)
	}

	// names with slashes and unicode, escaped element by element or whole
	report := outs["report"]
	for _, p := range []string{
		api.OutputURL(evaluate, report.Name),
		"/api/v1/task-runs/" + evaluate.String() + "/outputs/" + url.PathEscape(report.Name),
	} {
		r := b.do(t, "GET", p+"?download=1", nil)
		if r.status != 200 || string(r.body) != "# Report\n\nr2 is fine\n" {
			t.Errorf("GET %s: %d %s", p, r.status, r.body)
			continue
		}
		if cd := r.header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment;") || !strings.Contains(cd, "r%C3%A9sum%C3%A9%20%C3%BC.md") {
			t.Errorf("Content-Disposition %q", cd)
		}
		if ct := r.header.Get("Content-Type"); ct != "text/markdown; charset=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
	}
	// an SVG is sandboxed: its script cannot run in the API's origin
	r = b.do(t, "GET", api.OutputURL(evaluate, "plots/residuals.svg"), nil)
	if r.status != 200 || r.header.Get("Content-Type") != "image/svg+xml" || !strings.HasPrefix(r.header.Get("Content-Security-Policy"), "sandbox") {
		t.Errorf("svg: %d %v", r.status, r.header)
	}

	for _, tc := range []struct {
		path, want string
		status     int
	}{
		{api.OutputURL(train, "nope.txt"), `no output named \"nope.txt\"`, 404},
		{api.OutputURL(uuid.New(), "model.pkl"), "not found", 404},
		{"/api/v1/task-runs/not-a-uuid/outputs/model.pkl", "not a UUID", 400},
		{"/api/v1/task-runs/" + train.String() + "/outputs/a/%2E%2E/model.pkl", `\"..\" element`, 400},
		{model + "?size=1", "unknown query parameter", 400},
	} {
		r := b.do(t, "GET", tc.path, nil)
		if r.status != tc.status || !strings.Contains(string(r.body), tc.want) {
			t.Errorf("GET %s: %d %s, want %d naming %s", tc.path, r.status, r.body, tc.status, tc.want)
		}
	}

	// the blob gone from the store: 404 naming it
	if err := b.blobs.Delete(context.Background(), outs["model"].SHA256); err != nil {
		t.Fatal(err)
	}
	if r := b.do(t, "GET", model, nil); r.status != 404 || !strings.Contains(string(r.body), "not in the blob store") {
		t.Errorf("missing blob: %d %s", r.status, r.body)
	}
}

func TestTaskRunOutputScopes(t *testing.T) {
	t.Parallel()
	b := fullSetup(t, true)
	run, _ := outputsRun(t, b.bundle, projtest.RunSpec{})
	read, _, err := api.TokenCreate(context.Background(), b.pool, "viewer", api.ScopeRead)
	if err != nil {
		t.Fatal(err)
	}
	p := api.OutputURL(run.Tasks["train"], "model.pkl")
	if r := b.do(t, "GET", p, nil); r.status != http.StatusUnauthorized {
		t.Errorf("without a token: %d %s", r.status, r.body)
	}
	if r := b.do(t, "GET", p, nil, "Authorization", "Bearer "+read); r.status != 200 || string(r.body) != "0123456789abcdef" {
		t.Errorf("with a read token: %d %s", r.status, r.body)
	}
	for _, path := range []string{"/api/v1/runs/" + run.ID.String() + "/outputs", "/api/v1/deployments/" + uuid.NewString() + "/metrics"} {
		if r := b.do(t, "GET", path, nil); r.status != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d", path, r.status)
		}
	}
	// the UI's images and links send the token as a cookie: only here, and
	// only from the same site
	cookie := []string{"Cookie", "ordo_api_token=" + read}
	if r := b.do(t, "GET", p, nil, cookie...); r.status != 200 {
		t.Errorf("with the cookie: %d %s", r.status, r.body)
	}
	if r := b.do(t, "GET", p, nil, append(cookie, "Sec-Fetch-Site", "cross-site")...); r.status != http.StatusUnauthorized {
		t.Errorf("with the cookie from another site: %d", r.status)
	}
	if r := b.do(t, "GET", "/api/v1/runs/"+run.ID.String()+"/outputs", nil, cookie...); r.status != http.StatusUnauthorized {
		t.Errorf("the list with only the cookie: %d", r.status)
	}
}

func TestDeploymentMetricSeries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.do(t, "POST", "/api/v1/deployments", deploymentBody("house-prices", nil))
	if r.status != 201 {
		t.Fatalf("create deployment: %d %s", r.status, r.body)
	}
	var d projections.Deployment
	r.decode(t, &d)
	start := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	var ids []uuid.UUID
	for i := range 3 {
		run := b.log.CreateRun(projtest.RunSpec{DeploymentID: d.ID, DeploymentName: d.Name, Name: fmt.Sprintf("r%d", i), ScheduledAt: start.Add(time.Duration(i) * time.Minute)})
		run.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
		run.Task("load", domain.TaskRunStarted{Attempt: 1, Worker: "w1"},
			domain.TaskRunCompleted{Attempt: 1, Metrics: map[string]float64{"r2": 0.9 + float64(i)/100, "rmse": float64(10 - i)}})
		ids = append(ids, run.ID)
	}
	b.log.CreateRun(projtest.RunSpec{DeploymentID: d.ID, DeploymentName: d.Name, ScheduledAt: start.Add(time.Hour)}) // no metrics: not a point
	b.sync(t)

	var page projections.Page[projections.MetricPoint]
	r = b.do(t, "GET", "/api/v1/deployments/house-prices/metrics", nil)
	if r.status != 200 {
		t.Fatalf("series: %d %s", r.status, r.body)
	}
	r.decode(t, &page)
	if len(page.Items) != 3 || page.Items[0].RunID != ids[0] || page.Items[2].RunID != ids[2] || page.Items[2].Metrics["r2"] != 0.92 || page.Items[1].RunName != "r1" {
		t.Fatalf("series %s", r.body)
	}
	r = b.do(t, "GET", "/api/v1/deployments/"+d.ID.String()+"/metrics?limit=2", nil)
	page = projections.Page[projections.MetricPoint]{}
	r.decode(t, &page)
	if len(page.Items) != 2 || page.Items[0].RunID != ids[1] || page.Items[1].RunID != ids[2] {
		t.Errorf("the last 2, oldest first: %s", r.body)
	}
	if r := b.do(t, "GET", "/api/v1/deployments/"+d.ID.String()+"/metrics?limit=0", nil); r.status != 400 {
		t.Errorf("limit=0: %d", r.status)
	}
	if r := b.do(t, "GET", "/api/v1/deployments/"+uuid.NewString()+"/metrics", nil); r.status != 404 {
		t.Errorf("no such deployment: %d %s", r.status, r.body)
	}
	if r := b.do(t, "GET", "/api/v1/deployments/no-such/metrics", nil); r.status != 404 {
		t.Errorf("no such name: %d %s", r.status, r.body)
	}
}
