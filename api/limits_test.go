package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/projections"
	"github.com/ordoflow/ordo/projections/projtest"
)

// chunkedReader hides its length, so that the request is sent with
// Transfer-Encoding: chunked and no Content-Length: the limit must hold
// while reading, not only by the header.
type chunkedReader struct{ r io.Reader }

func (c chunkedReader) Read(p []byte) (int, error) { return c.r.Read(p) }

// TestLimitBodySize: every endpoint that reads a body refuses one above
// 1 MiB with 413 too_large naming the limit, whether the size is announced
// or not, and writes nothing.
func TestLimitBodySize(t *testing.T) {
	t.Parallel()
	b := fullSetup(t, false)
	r := b.do(t, "POST", "/api/v1/deployments", deploymentBody("limits", nil))
	if r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	var d struct{ ID string }
	r.decode(t, &d)
	b.sync(t)
	before := tableCounts(t, b.bundle)

	big := `{"parameters": {"blob": "` + strings.Repeat("x", 1<<20) + `"}}`
	paths := []string{
		"/api/v1/deployments",
		"/api/v1/deployments/" + d.ID + "/runs",
		"/api/v1/deployments/" + d.ID + "/pause",
		"/api/v1/runs/" + d.ID + "/cancel",
		"/api/v1/work-queues",
	}
	for _, path := range paths {
		for _, chunked := range []bool{false, true} {
			var body io.Reader = strings.NewReader(big)
			if chunked {
				body = chunkedReader{strings.NewReader(big)}
			}
			req, _ := http.NewRequest("POST", b.url+path, body)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var env errorEnvelope
			_ = json.Unmarshal(out, &env)
			if resp.StatusCode != 413 || env.Error.Code != "too_large" || !strings.Contains(env.Error.Message, "1048576") {
				t.Errorf("POST %s (chunked %t): %d %s", path, chunked, resp.StatusCode, out)
			}
		}
	}
	sameCounts(t, before, tableCounts(t, b.bundle))
}

// TestLimitTasksPerFlow: a flow of MaxTasksPerFlow tasks deploys through
// the API; one more task is refused with a message naming the limit.
func TestLimitTasksPerFlow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	flow := func(n int) map[string]any {
		tasks := make([]any, n)
		for i := range tasks {
			task := map[string]any{"name": fmt.Sprint("t", i), "command": []string{"x"}}
			if i > 0 && i%100 == 0 {
				task["depends_on"] = []string{fmt.Sprint("t", i-1)}
			}
			tasks[i] = task
		}
		return map[string]any{"name": "wide", "tasks": tasks}
	}
	body, _ := json.Marshal(map[string]any{"name": "too-many", "flow": flow(domain.MaxTasksPerFlow + 1)})
	if len(body) > 1<<20 {
		t.Fatalf("the body (%d bytes) must fit the body limit for this test to reach validation", len(body))
	}
	r := b.do(t, "POST", "/api/v1/deployments", body)
	var env errorEnvelope
	r.decode(t, &env)
	if r.status != 400 || len(env.Error.Details) != 1 || env.Error.Details[0].Field != "flow.tasks" || !strings.Contains(env.Error.Details[0].Message, "at most 20000 tasks") {
		t.Fatalf("%d tasks: %d %s", domain.MaxTasksPerFlow+1, r.status, r.body)
	}
	start := time.Now()
	body, _ = json.Marshal(map[string]any{"name": "just-fits", "flow": flow(domain.MaxTasksPerFlow)})
	if r := b.do(t, "POST", "/api/v1/deployments", body); r.status != 201 {
		t.Fatalf("%d tasks: %d %.300s", domain.MaxTasksPerFlow, r.status, r.body)
	}
	t.Logf("a deployment of %d tasks (%d bytes) saved and projected in %s", domain.MaxTasksPerFlow, len(body), time.Since(start).Round(time.Millisecond))
}

// TestLimitPageSizes: page sizes above the maximum are refused naming the
// parameter and the limit, not silently capped.
func TestLimitPageSizes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, c := range []struct {
		path string
		max  int
	}{
		{"/api/v1/deployments", projections.MaxPageSize},
		{"/api/v1/runs", projections.MaxPageSize},
		{"/api/v1/events", projections.MaxPageSize},
		{"/api/v1/runs/" + "00000000-0000-0000-0000-000000000001" + "/logs", projections.MaxLogPageSize},
	} {
		for _, limit := range []string{fmt.Sprint(c.max + 1), "-1", "99999999999999999999"} {
			r := b.do(t, "GET", c.path+"?limit="+limit, nil)
			var env errorEnvelope
			_ = json.Unmarshal(r.body, &env)
			if r.status == 404 && strings.HasSuffix(c.path, "/logs") {
				continue // logs check the run first
			}
			if r.status != 400 || len(env.Error.Details) == 0 || env.Error.Details[0].Field != "limit" {
				t.Errorf("GET %s?limit=%s: %d %s", c.path, limit, r.status, r.body)
			}
		}
		if r := b.do(t, "GET", c.path+"?limit="+fmt.Sprint(c.max), nil); r.status != 200 && r.status != 404 {
			t.Errorf("GET %s?limit=%d: %d %s", c.path, c.max, r.status, r.body)
		}
	}
}

// TestLimitResultShown: a task result of the largest size a worker accepts
// (1 MiB) is served back whole by the run endpoints.
func TestLimitResultShown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	run := b.log.CreateRun(projtest.RunSpec{})
	big := strings.Repeat("r", 1<<20-2) // a JSON string of exactly 1 MiB
	run.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
	run.Succeed("load", 1, big)
	b.sync(t)
	r := b.do(t, "GET", "/api/v1/runs/"+run.ID.String(), nil)
	if r.status != 200 || !bytes.Contains(r.body, []byte(big)) {
		t.Fatalf("run with a 1 MiB result: %d, %d bytes", r.status, len(r.body))
	}
}
