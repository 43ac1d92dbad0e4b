package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
	"github.com/ordoflow/ordo/projections"
	"github.com/ordoflow/ordo/projections/projtest"
)

// writeLogLines stores lines as a worker does: one batch, then NOTIFY.
func writeLogLines(t *testing.T, b bundle, run *projtest.Run, task string, stream string, lines ...string) {
	t.Helper()
	ctx := context.Background()
	for _, l := range lines {
		var level *string
		if stream == "system" {
			s := "INFO"
			level = &s
		}
		if _, err := b.pool.Exec(ctx, `INSERT INTO task_run_logs (task_run_id, flow_run_id, attempt, ts, stream, level, line) VALUES ($1, $2, 1, now(), $3, $4, $5)`,
			run.Tasks[task], run.ID, stream, level, l); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, jobs.LogsChannel, run.ID.String()); err != nil {
		t.Fatal(err)
	}
}

func TestAPIRunLogs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	run := b.log.CreateRun(projtest.RunSpec{Name: "logs"})
	run.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
	b.sync(t)
	writeLogLines(t, b, run, "load", "system", "attempt 1 of task load started")
	writeLogLines(t, b, run, "load", "stdout", "loading houses", "20640 rows")
	writeLogLines(t, b, run, "left", "stderr", "warning: deprecated")
	base := "/api/v1/runs/" + run.ID.String() + "/logs"

	var page projections.Page[projections.LogLine]
	r := b.do(t, "GET", base, nil)
	r.decode(t, &page)
	if r.status != 200 || len(page.Items) != 4 || page.NextCursor != nil {
		t.Fatalf("logs: %d %s", r.status, r.body)
	}
	first := page.Items[0]
	if first.TaskName != "load" || first.Stream != "system" || first.Level == nil || *first.Level != "INFO" || first.TaskRunID != run.Tasks["load"] {
		t.Errorf("first line: %+v", first)
	}
	if l := page.Items[1]; l.Message != "loading houses" || l.Level != nil || l.ID <= first.ID {
		t.Errorf("second line: %+v", l)
	}
	var raw struct {
		Items []map[string]any `json:"items"`
	}
	r.decode(t, &raw)
	for _, field := range []string{"timestamp", "task_run_id", "task_name", "stream", "level", "message"} {
		if _, ok := raw.Items[0][field]; !ok {
			t.Errorf("a log line lacks %q", field)
		}
	}

	messages := func(path string) ([]string, *string) {
		t.Helper()
		var p projections.Page[projections.LogLine]
		r := b.do(t, "GET", path, nil)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		r.decode(t, &p)
		var out []string
		for _, l := range p.Items {
			out = append(out, l.Message)
		}
		return out, p.NextCursor
	}
	if got, _ := messages(base + "?task=left"); !slices.Equal(got, []string{"warning: deprecated"}) {
		t.Errorf("task=left: %v", got)
	}
	if got, _ := messages(base + "?task=" + run.Tasks["load"].String()); len(got) != 3 {
		t.Errorf("task=<load's id>: %v", got)
	}
	got, next := messages(base + "?limit=2")
	if len(got) != 2 || next == nil {
		t.Fatalf("limit=2: %v %v", got, next)
	}
	if rest, next := messages(base + "?after=" + *next); !slices.Equal(rest, []string{"20640 rows", "warning: deprecated"}) || next != nil {
		t.Errorf("after the cursor: %v %v", rest, next)
	}

	t.Run("Follow", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", b.url+base+"?follow=true&task=load", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("follow: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		events := make(chan [2]string, 100) // event, data
		go func() {
			defer close(events)
			sc := bufio.NewScanner(resp.Body)
			var ev, data string
			for sc.Scan() {
				line := sc.Text()
				switch {
				case strings.HasPrefix(line, "event: "):
					ev = strings.TrimPrefix(line, "event: ")
				case strings.HasPrefix(line, "data: "):
					data = strings.TrimPrefix(line, "data: ")
				case line == "" && ev != "":
					events <- [2]string{ev, data}
					ev, data = "", ""
				}
			}
		}()
		next := func() (string, string) {
			t.Helper()
			select {
			case e, ok := <-events:
				if !ok {
					t.Fatal("the stream ended early")
				}
				return e[0], e[1]
			case <-ctx.Done():
				t.Fatal("no event in time")
			}
			return "", ""
		}
		message := func(data string) string {
			var l projections.LogLine
			if err := json.Unmarshal([]byte(data), &l); err != nil {
				t.Fatalf("%s: %v", data, err)
			}
			return l.Message
		}
		for _, want := range []string{"attempt 1 of task load started", "loading houses", "20640 rows"} {
			if ev, data := next(); ev != "log" || message(data) != want {
				t.Fatalf("got %s %s, want the line %q", ev, data, want)
			}
		}
		writeLogLines(t, b, run, "left", "stdout", "not this task")
		writeLogLines(t, b, run, "load", "stdout", "done")
		if ev, data := next(); ev != "log" || message(data) != "done" {
			t.Fatalf("a new line: %s %s", ev, data)
		}
		// the last line is stored before the run ends, as workers do
		writeLogLines(t, b, run, "load", "stdout", "last words")
		run.Flow(domain.FlowRunFailed{Message: "stopped"})
		if ev, data := next(); ev != "log" || message(data) != "last words" {
			t.Fatalf("the last line: %s %s", ev, data)
		}
		ev, data := next()
		if ev != "end" || !strings.Contains(data, `"FAILED"`) {
			t.Fatalf("the end: %s %s", ev, data)
		}
		if _, ok := <-events; ok {
			t.Fatal("events after the end")
		}
	})

	t.Run("BadInputs", func(t *testing.T) {
		for _, tt := range []struct {
			name, path string
			status     int
			code       string
			field      string
		}{
			{"UnknownRun", "/api/v1/runs/" + uuid.NewString() + "/logs", 404, "not_found", ""},
			{"UnknownRunFollow", "/api/v1/runs/" + uuid.NewString() + "/logs?follow=true", 404, "not_found", ""},
			{"MalformedID", "/api/v1/runs/nope/logs", 404, "not_found", ""},
			{"NegativeAfter", base + "?after=-1", 400, "invalid", "after"},
			{"TextAfter", base + "?after=soon", 400, "invalid", "after"},
			{"LimitTooHigh", base + "?limit=100000", 400, "invalid", "limit"},
			{"UnknownTask", base + "?task=nope", 400, "invalid", "task"},
			{"UnknownTaskFollow", base + "?task=nope&follow=true", 400, "invalid", "task"},
			{"OtherRunsTask", base + "?task=" + uuid.NewString(), 400, "invalid", "task"},
			{"BadFollow", base + "?follow=maybe", 400, "invalid", "follow"},
			{"UnknownParameter", base + "?tail=10", 400, "invalid", "tail"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				r := b.do(t, "GET", tt.path, nil)
				var env errorEnvelope
				r.decode(t, &env)
				if r.status != tt.status || env.Error.Code != tt.code || env.Error.Message == "" {
					t.Fatalf("%d %s", r.status, r.body)
				}
				if tt.field != "" && !slices.ContainsFunc(env.Error.Details, func(d domain.Detail) bool { return d.Field == tt.field }) {
					t.Errorf("no detail names %q: %s", tt.field, r.body)
				}
			})
		}
		if r := b.do(t, "POST", base, nil); r.status != 405 {
			t.Errorf("POST logs: %d", r.status)
		}
	})
}

// queueBundle is a server with a River client, as `ordo server` runs.
func queueBundle(t *testing.T) bundle { return newBundle(t, true) }

func TestAPIWorkQueues(t *testing.T) {
	t.Parallel()
	b := queueBundle(t)
	ctx := context.Background()

	created := b.do(t, "POST", "/api/v1/work-queues", map[string]any{"name": "ml", "concurrency_limit": 3})
	var q projections.WorkQueue
	created.decode(t, &q)
	if created.status != 201 || q.Name != "ml" || q.ConcurrencyLimit == nil || *q.ConcurrencyLimit != 3 || q.Paused {
		t.Fatalf("create: %d %s", created.status, created.body)
	}
	updated := b.do(t, "POST", "/api/v1/work-queues", `{"name": "ml", "concurrency_limit": null}`)
	updated.decode(t, &q)
	if updated.status != 200 || q.ConcurrencyLimit != nil {
		t.Fatalf("update: %d %s", updated.status, updated.body)
	}

	// two due jobs and one for later on ml, a running one; a worker on ml
	// and gpu runs a task run; a deployment names the cpu queue
	for _, j := range []struct{ state, at string }{{"available", "now()"}, {"scheduled", "now() - interval '1 second'"}, {"scheduled", "now() + interval '1 hour'"}, {"running", "now()"}} {
		if _, err := b.pool.Exec(ctx, `INSERT INTO river_job (args, kind, max_attempts, queue, state, scheduled_at) VALUES ('{}', 'ordo.task_run', 10, 'ml', $1, `+j.at+`)`, j.state); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.pool.Exec(ctx, `INSERT INTO workers (id, name, queues, hostname, pid) VALUES ($1, 'gpu-1', '{ml,gpu}', 'host', 42), ($2, 'old', '{ml}', 'host', 43)`, uuid.New(), uuid.New()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(ctx, `UPDATE workers SET last_heartbeat_at = now() - interval '5 minutes' WHERE name = 'old'`); err != nil {
		t.Fatal(err)
	}
	run := b.log.CreateRun(projtest.RunSpec{WorkQueue: "ml"})
	run.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
	run.Task("load", domain.TaskRunStarted{Attempt: 1, Worker: "gpu-1"})
	if r := b.do(t, "POST", "/api/v1/deployments", deploymentBody("cpu-dep", func(m map[string]any) { m["work_queue"] = "cpu" })); r.status != 201 {
		t.Fatalf("deployment: %d %s", r.status, r.body)
	}
	b.sync(t)

	var page projections.Page[projections.WorkQueue]
	b.do(t, "GET", "/api/v1/work-queues", nil).decode(t, &page)
	byName := map[string]projections.WorkQueue{}
	var names []string
	for _, q := range page.Items {
		byName[q.Name] = q
		names = append(names, q.Name)
	}
	if !slices.Equal(names, []string{"cpu", "gpu", "ml"}) || page.NextCursor != nil {
		t.Fatalf("queues %v", names)
	}
	ml := byName["ml"]
	if ml.Depth != 2 || ml.Scheduled != 1 || ml.Running != 1 || ml.WorkersOnline != 1 || len(ml.Workers) != 1 {
		t.Fatalf("ml: %+v", ml)
	}
	if w := ml.Workers[0]; w.Name != "gpu-1" || w.Running != 1 || w.LastHeartbeatAt.IsZero() {
		t.Errorf("ml's worker: %+v", w)
	}
	if c := byName["cpu"]; c.Depth != 0 || c.WorkersOnline != 0 || c.CreatedAt != nil {
		t.Errorf("cpu: %+v", c)
	}
	var first, second projections.Page[projections.WorkQueue]
	b.do(t, "GET", "/api/v1/work-queues?limit=2", nil).decode(t, &first)
	if len(first.Items) != 2 || first.NextCursor == nil {
		t.Fatalf("first page: %+v", first)
	}
	b.do(t, "GET", "/api/v1/work-queues?limit=2&cursor="+*first.NextCursor, nil).decode(t, &second)
	if len(second.Items) != 1 || second.Items[0].Name != "ml" || second.NextCursor != nil {
		t.Fatalf("second page: %+v", second)
	}

	paused := b.do(t, "POST", "/api/v1/work-queues/gpu/pause", nil)
	paused.decode(t, &q)
	if paused.status != 200 || !q.Paused || q.PausedAt == nil {
		t.Fatalf("pause: %d %s", paused.status, paused.body)
	}
	var pausedAt *time.Time
	if err := b.pool.QueryRow(ctx, `SELECT paused_at FROM river_queue WHERE name = 'gpu'`).Scan(&pausedAt); err != nil || pausedAt == nil {
		t.Fatalf("river_queue: %v %v", pausedAt, err)
	}
	resumed := b.do(t, "POST", "/api/v1/work-queues/gpu/resume", "{}")
	resumed.decode(t, &q)
	if resumed.status != 200 || q.Paused {
		t.Fatalf("resume: %d %s", resumed.status, resumed.body)
	}

	m := string(b.do(t, "GET", "/metrics", nil).body)
	for _, want := range []string{`ordo_work_queue_depth{queue="ml"} 2`, `ordo_work_queue_running{queue="ml"} 1`, `ordo_workers_online{queue="gpu"} 1`,
		`ordo_flow_runs{state="RUNNING"} 1`, `ordo_flow_runs{state="COMPLETED"} 0`, `ordo_events_appended_total{type="TaskRunStarted"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	ui := b.do(t, "GET", "/riverui/", nil)
	if ui.status != 200 || !strings.Contains(strings.ToLower(string(ui.body)), "<html") {
		t.Errorf("River UI: %d %.200s", ui.status, ui.body)
	}

	before := b.eventCount(t)
	for _, tt := range []struct {
		name, method, path string
		body               any
		status             int
		code, field        string
	}{
		{"MissingName", "POST", "/api/v1/work-queues", `{"concurrency_limit": 2}`, 400, "invalid", "name"},
		{"BadName", "POST", "/api/v1/work-queues", `{"name": "no spaces"}`, 400, "invalid", "name"},
		{"ZeroLimit", "POST", "/api/v1/work-queues", `{"name": "ml", "concurrency_limit": 0}`, 400, "invalid", "concurrency_limit"},
		{"TextLimit", "POST", "/api/v1/work-queues", `{"name": "ml", "concurrency_limit": "3"}`, 400, "invalid", "concurrency_limit"},
		{"UnknownField", "POST", "/api/v1/work-queues", `{"name": "ml", "paused": true}`, 400, "invalid", "paused"},
		{"MalformedJSON", "POST", "/api/v1/work-queues", `{"name": `, 400, "invalid", ""},
		{"OversizeBody", "POST", "/api/v1/work-queues", `{"name": "` + strings.Repeat("x", 2<<20) + `"}`, 413, "too_large", ""},
		{"PauseUnknown", "POST", "/api/v1/work-queues/nope/pause", nil, 404, "not_found", ""},
		{"PauseBadName", "POST", "/api/v1/work-queues/%20x/pause", nil, 404, "not_found", ""},
		{"PauseWithBody", "POST", "/api/v1/work-queues/ml/pause", `{"now": true}`, 400, "invalid", "now"},
		{"BadCursor", "GET", "/api/v1/work-queues?cursor=zzz", nil, 400, "invalid", "cursor"},
		{"LimitTooHigh", "GET", "/api/v1/work-queues?limit=1000", nil, 400, "invalid", "limit"},
		{"UnknownParameter", "GET", "/api/v1/work-queues?name=ml", nil, 400, "invalid", "name"},
		{"WrongMethod", "DELETE", "/api/v1/work-queues", nil, 405, "method_not_allowed", ""},
		{"WrongMethodPause", "GET", "/api/v1/work-queues/ml/pause", nil, 405, "method_not_allowed", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(t, tt.method, tt.path, tt.body)
			var env errorEnvelope
			r.decode(t, &env)
			if r.status != tt.status || env.Error.Code != tt.code || env.Error.Message == "" || env.Error.Details == nil {
				t.Fatalf("%d %s", r.status, r.body)
			}
			if tt.field != "" && !slices.ContainsFunc(env.Error.Details, func(d domain.Detail) bool { return d.Field == tt.field }) {
				t.Errorf("no detail names %q: %s", tt.field, r.body)
			}
		})
	}
	var limit *int32
	if err := b.pool.QueryRow(ctx, `SELECT concurrency_limit FROM work_queues WHERE name = 'ml'`).Scan(&limit); err != nil || limit != nil {
		t.Errorf("a refused request changed ml: %v %v", limit, err)
	}
	var paused2 bool
	_ = b.pool.QueryRow(ctx, `SELECT paused_at IS NOT NULL FROM river_queue WHERE name = 'ml'`).Scan(&paused2)
	if paused2 || b.eventCount(t) != before {
		t.Error("a refused request paused ml or wrote events")
	}
}
