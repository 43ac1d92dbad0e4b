package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"

	"github.com/ordoflow/ordo/internal/bench"
	"github.com/ordoflow/ordo/internal/bench/benchtest"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// TestUI drives the web UI in headless Chromium against a real server and
// worker: every page shows data created through the API, rows and graphs
// change live, filters live in the URL, Cancel and the history slider work.
// Screenshots of every page go to artifacts/screenshots/.
func TestUI(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("browser tests are not short")
	}
	e := startUI(t, "uitest")

	t.Run("PagesRenderDataFromTheAPI", func(t *testing.T) {
		t.Parallel()
		etl := e.deploy(t, map[string]any{
			"name": "ui-pages-etl", "description": "load and train the house-price model", "work_queue": "uitest",
			"tags": []string{"etl", "nightly"}, "schedule": map[string]any{"interval_seconds": 300},
			"parameters": map[string]any{"table": "houses", "test_size": 0.2},
			"parameters_schema": map[string]any{
				"type": "object",
				"properties": map[string]any{
					"table":     map[string]any{"type": "string", "description": "table to read"},
					"test_size": map[string]any{"type": "number"},
					"verbose":   map[string]any{"type": "boolean"},
				},
				"required": []string{"table"},
			},
			"flow": map[string]any{"name": "pagesflow", "tasks": []any{
				shellTask("load", `echo loading; echo '{"rows": 42}' > "$ORDO_RESULT_PATH"`),
				shellTask("train", `echo training`, "load"),
			}},
		})
		cron := e.deploy(t, map[string]any{
			"name": "ui-pages-cron", "work_queue": "uitest", "schedule": map[string]any{"cron": "30 2 * * 1-5", "timezone": "Europe/Paris"},
			"flow": map[string]any{"name": "cronflow", "tasks": []any{shellTask("only", "true")}},
		})
		run := e.startRun(t, etl.ID, nil)
		run = e.waitRun(t, run.ID, "the end", terminal)
		if run.State.Type != "COMPLETED" {
			t.Fatalf("run ended %s", run.State.Type)
		}
		ctx := e.tab(t)

		e.open(t, ctx, "/")
		e.waitJS(t, ctx, "the chart", `!!document.querySelector('#runs-chart rect[data-state="COMPLETED"]')`, 15*time.Second)
		e.waitJS(t, ctx, "the stats", `document.querySelector('#stat-completed .value').textContent !== '0'`, 10*time.Second)
		e.waitJS(t, ctx, "the workers panel", `document.querySelector('#workers-online').textContent.length > 0`, 10*time.Second)
		e.screenshot(t, ctx, "dashboard")

		e.open(t, ctx, "/runs")
		e.waitJS(t, ctx, "the run's row", sel(`(() => { const r = document.querySelector('tr[data-run-id=%q]'); return !!r && r.innerText.includes(%s) && r.innerText.includes('COMPLETED') && r.innerText.includes('ui-pages-etl') && r.innerText.includes('nightly') })()`, run.ID, jsString(run.Name)), 15*time.Second)
		e.screenshot(t, ctx, "runs")

		e.open(t, ctx, "/runs/"+run.ID)
		e.waitJS(t, ctx, "the run page", sel(`document.querySelector('#run-name').textContent === %s && document.querySelectorAll('svg.graph g.node').length === 2`, jsString(run.Name)), 15*time.Second)
		e.waitJS(t, ctx, "parameters and result", `document.querySelector('#run-parameters').innerText.includes('houses') && document.querySelector('#run-result').innerText.length > 0`, 5*time.Second)
		e.waitJS(t, ctx, "the audit trail", `[...document.querySelectorAll('#audit tbody tr')].some(r => r.dataset.type === 'FlowRunCompleted')`, 5*time.Second)
		e.waitJS(t, ctx, "the timeline", `document.querySelectorAll('#timeline rect.attempt').length === 2`, 5*time.Second)
		e.screenshot(t, ctx, "run-detail")

		e.open(t, ctx, "/deployments")
		e.waitJS(t, ctx, "both deployments with their schedules in words", sel(`(() => {
			const a = document.querySelector('tr[data-deployment-id=%q]'), b = document.querySelector('tr[data-deployment-id=%q]');
			return !!a && !!b && a.innerText.includes('Every 5 minutes') && a.innerText.includes('uitest') && a.innerText.includes('etl')
				&& b.innerText.includes('At 02:30, on Monday to Friday') && b.innerText.includes('Europe/Paris') })()`, etl.ID, cron.ID), 15*time.Second)
		e.screenshot(t, ctx, "deployments")

		e.open(t, ctx, "/deployments/"+etl.ID)
		e.waitJS(t, ctx, "the deployment page", `document.querySelector('#deployment-name').textContent === 'ui-pages-etl' && document.querySelector('#schedule-words').textContent === 'Every 5 minutes'`, 15*time.Second)
		e.waitJS(t, ctx, "the parameters form from the schema", `document.querySelector('#param-table').value === 'houses' && document.querySelector('#param-test_size').value === '0.2' && document.querySelector('#param-verbose').type === 'checkbox'`, 5*time.Second)
		e.waitJS(t, ctx, "the recent runs", sel(`!!document.querySelector('#recent-runs tr[data-run-id=%q]')`, run.ID), 10*time.Second)
		e.screenshot(t, ctx, "deployment-detail")
		e.run(t, ctx, "run with a parameter", fill(`#param-table`, "apartments"), click(`#run-submit`))
		e.waitJS(t, ctx, "the created run's link", `!!document.querySelector('#created-run')`, 15*time.Second)
		href := evalJS[string](t, ctx, `document.querySelector('#created-run').getAttribute('href')`)
		var created struct {
			Parameters map[string]any `json:"parameters"`
		}
		e.mustAPI(t, http.MethodGet, "/runs/"+strings.TrimPrefix(href, "/runs/"), nil, &created)
		if created.Parameters["table"] != "apartments" || created.Parameters["test_size"] != 0.2 || created.Parameters["verbose"] != false {
			t.Errorf("the form created a run with parameters %v", created.Parameters)
		}

		e.open(t, ctx, "/deployments/"+cron.ID)
		e.waitJS(t, ctx, "the JSON parameters form", `!!document.querySelector('#param-json')`, 10*time.Second)
		// a refusal is shown with its message once (the message holds its details)
		e.run(t, ctx, "run with a parameter the deployment does not take", fill(`#param-json`, `{"tabel": "houses"}`), click(`#run-submit`))
		e.waitJS(t, ctx, "the refusal", `document.querySelector('#run-message').className.includes('error')`, 15*time.Second)
		refusal := evalJS[string](t, ctx, `document.querySelector('#run-message').textContent`)
		if want := `unknown parameter "tabel" (deployment ui-pages-cron takes no parameters)`; strings.Count(refusal, want) != 1 {
			t.Errorf("the run form shows %q, want %q once", refusal, want)
		}
		e.run(t, ctx, "pause the schedule", click(`#pause-toggle`))
		e.waitJS(t, ctx, "the paused deployment", `document.querySelector('#pause-toggle').getAttribute('aria-pressed') === 'true' && document.querySelector('.page-head [data-paused]').textContent === 'Paused'`, 10*time.Second)
		var paused struct {
			Paused bool `json:"paused"`
		}
		if e.mustAPI(t, http.MethodGet, "/deployments/"+cron.ID, nil, &paused); !paused.Paused {
			t.Error("the toggle did not pause the deployment")
		}
		e.run(t, ctx, "resume the schedule", click(`#pause-toggle`))
		e.waitJS(t, ctx, "the active deployment", `document.querySelector('#pause-toggle').getAttribute('aria-pressed') === 'false' && document.querySelector('.page-head [data-paused]').textContent === 'Active'`, 10*time.Second)

		e.open(t, ctx, "/work-queues")
		if code := e.api(t, http.MethodGet, "/work-queues", nil, nil); code == http.StatusNotFound || code == http.StatusNotImplemented {
			e.waitJS(t, ctx, "a clear not-available message", `document.querySelector('#queues-unavailable') && document.querySelector('#queues-unavailable').textContent.includes('not available')`, 10*time.Second)
		} else {
			e.waitJS(t, ctx, "the uitest queue and its worker", `!!document.querySelector('tr[data-queue="uitest"]') && document.querySelectorAll('#workers tr[data-worker]').length > 0`, 10*time.Second)
			// a queue of its own, so that pausing it stops no other test
			e.deploy(t, map[string]any{"name": "ui-pages-paused-queue", "work_queue": "uipauseq",
				"flow": map[string]any{"name": "pq", "tasks": []any{shellTask("t", "true")}}})
			e.open(t, ctx, "/work-queues")
			e.run(t, ctx, "pause a queue", chromedp.Click(chromedp.CSS(`tr[data-queue="uipauseq"] button`)))
			// paused, or the API's refusal shown (pausing queues may not be wired yet: 501)
			e.waitJS(t, ctx, "the paused queue or the API's answer", `(document.querySelector('tr[data-queue="uipauseq"]').innerText.includes('Paused') && document.querySelector('tr[data-queue="uipauseq"] button').getAttribute('aria-pressed') === 'true')
				|| document.querySelector('#queues-message').classList.contains('error')`, 10*time.Second)
			if msg := evalJS[string](t, ctx, `document.querySelector('#queues-message.error') ? document.querySelector('#queues-message').textContent : ''`); msg != "" {
				var apiErr struct {
					Error struct{ Code, Message string }
				}
				code := e.apiError(t, http.MethodPost, "/work-queues/uipauseq/pause", &apiErr)
				if !strings.Contains(msg, strconv.Itoa(code)) || !strings.Contains(msg, apiErr.Error.Message) {
					t.Errorf("pausing a queue: the API answers %d %q, the page says %q", code, apiErr.Error.Message, msg)
				}
			}
		}
		e.screenshot(t, ctx, "work-queues")

		e.open(t, ctx, "/no-such-page")
		e.waitJS(t, ctx, "the not-found page", `document.querySelector('main h1').textContent === 'Page not found'`, 5*time.Second)
	})

	t.Run("RowTurnsCompletedWithoutReload", func(t *testing.T) {
		t.Parallel()
		d := e.deploy(t, map[string]any{"name": "ui-live", "work_queue": "uitest",
			"flow": map[string]any{"name": "liveflow", "tasks": []any{shellTask("nap", "sleep 5")}}})
		ctx := e.tab(t)
		e.open(t, ctx, "/runs?deployment=ui-live")
		e.waitJS(t, ctx, "the empty table", `document.querySelector('#runs-table').innerText.includes('No run matches')`, 10*time.Second)
		e.run(t, ctx, "mark the page", js(`window.__notReloaded = true`))
		run := e.startRun(t, d.ID, nil)
		row := sel(`document.querySelector('tr[data-run-id=%q]')`, run.ID)
		// The task sleeps 5 s: the row must be seen RUNNING in that window,
		// also when a loaded machine slows the page's live updates.
		e.waitJS(t, ctx, "the new run's row, RUNNING", sel(`!!%s && %s.dataset.state === 'RUNNING' && %s.querySelector('.badge').textContent === 'RUNNING'`, row, row, row), 20*time.Second)
		e.screenshot(t, ctx, "runs-live-running")
		e.waitJS(t, ctx, "the row, COMPLETED", sel(`%s.dataset.state === 'COMPLETED' && %s.querySelector('.badge').textContent === 'COMPLETED'`, row, row), 30*time.Second)
		if !evalJS[bool](t, ctx, `window.__notReloaded === true`) {
			t.Fatal("the page was reloaded")
		}
		e.screenshot(t, ctx, "runs-live-completed")
	})

	t.Run("DiamondGraphHasFourNodesAndFourEdges", func(t *testing.T) {
		t.Parallel()
		d := e.deploy(t, map[string]any{"name": "ui-diamond", "work_queue": "uitest",
			"flow": map[string]any{"name": "diamond", "tasks": []any{
				shellTask("extract", "echo extract"),
				shellTask("clean", "echo clean", "extract"),
				shellTask("enrich", "echo enrich fails >&2; exit 3", "extract"),
				shellTask("report", "echo report", "clean", "enrich"),
			}}})
		run := e.startRun(t, d.ID, nil)
		run = e.waitRun(t, run.ID, "the end", terminal)
		want := map[string]string{"extract": "COMPLETED", "clean": "COMPLETED", "enrich": "FAILED", "report": "CANCELLED"}
		for _, tr := range run.TaskRuns {
			if want[tr.TaskName] != tr.State.Type {
				t.Fatalf("API: task %s is %s, want %s", tr.TaskName, tr.State.Type, want[tr.TaskName])
			}
		}
		ctx := e.tab(t)
		e.open(t, ctx, "/runs/"+run.ID)
		e.waitJS(t, ctx, "four nodes", `document.querySelectorAll('svg.graph g.node').length === 4`, 15*time.Second)
		type node struct {
			Task  string  `json:"task"`
			State string  `json:"state"`
			Label string  `json:"label"`
			X     float64 `json:"x"`
		}
		nodes := evalJS[[]node](t, ctx, `[...document.querySelectorAll('svg.graph g.node')].map(g => ({task: g.dataset.task, state: g.dataset.state,
			label: g.querySelector('text.state').textContent, x: g.transform.baseVal.getItem(0).matrix.e}))`)
		x := map[string]float64{}
		for _, n := range nodes {
			if want[n.Task] != n.State || !strings.HasPrefix(n.Label, n.State) {
				t.Errorf("node %s: state %s, label %q; want %s written", n.Task, n.State, n.Label, want[n.Task])
			}
			x[n.Task] = n.X
		}
		if !(x["extract"] < x["clean"] && x["clean"] == x["enrich"] && x["enrich"] < x["report"]) {
			t.Errorf("nodes are not layered by depth: %v", x)
		}
		edges := evalJS[[]string](t, ctx, `[...document.querySelectorAll('svg.graph path.edge')].map(p => p.dataset.from + '->' + p.dataset.to + (p.getAttribute('marker-end') ? ' arrow' : '')).sort()`)
		wantEdges := []string{"clean->report arrow", "enrich->report arrow", "extract->clean arrow", "extract->enrich arrow"}
		if fmt.Sprint(edges) != fmt.Sprint(wantEdges) {
			t.Errorf("edges %v, want %v", edges, wantEdges)
		}
		e.screenshot(t, ctx, "run-diamond-graph")
	})

	t.Run("LogsAppearWhileTheTaskRuns", func(t *testing.T) {
		t.Parallel()
		// the task goes on only once the test has seen its first line on
		// the page, however slow the machine (at most two minutes)
		gate := filepath.Join(t.TempDir(), "go-on")
		d := e.deploy(t, map[string]any{"name": "ui-logs", "work_queue": "uitest",
			"flow": map[string]any{"name": "logsflow", "tasks": []any{
				shellTask("talk", "echo hello-from-the-task; i=0; while [ ! -e "+gate+" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; echo goodbye-from-the-task"),
			}}})
		run := e.startRun(t, d.ID, nil)
		ctx := e.tab(t)
		e.open(t, ctx, "/runs/"+run.ID)
		if code := e.api(t, http.MethodGet, "/runs/"+run.ID+"/logs", nil, nil); code == http.StatusNotFound || code == http.StatusMethodNotAllowed || code == http.StatusNotImplemented {
			e.waitJS(t, ctx, "a clear not-available message", `!!document.querySelector('#logs-unavailable') && document.querySelector('#logs-unavailable').textContent.includes('not available')`, 10*time.Second)
			t.Skipf("GET /api/v1/runs/{id}/logs answers %d: the logs endpoint is not in the API yet; the page says so", code)
		}
		e.waitJS(t, ctx, "the first log line", `[...document.querySelectorAll('#logs .line')].some(l => l.innerText.includes('hello-from-the-task'))`, 20*time.Second)
		state := evalJS[string](t, ctx, `document.querySelector('#run-state .badge').dataset.state`)
		var now apiRun
		e.mustAPI(t, http.MethodGet, "/runs/"+run.ID, nil, &now)
		if terminal(now) || state != "RUNNING" {
			t.Fatalf("the log line showed only once the run was %s (page: %s)", now.State.Type, state)
		}
		e.screenshot(t, ctx, "run-logs-live")
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		e.waitJS(t, ctx, "the last log line", `[...document.querySelectorAll('#logs .line')].some(l => l.innerText.includes('goodbye-from-the-task'))`, 30*time.Second)
		e.waitJS(t, ctx, "the graph node, COMPLETED without reload", `document.querySelector('svg.graph g.node[data-task="talk"]').dataset.state === 'COMPLETED'`, 20*time.Second)
		e.run(t, ctx, "filter by task", fill(`#log-task`, "talk"), js(`document.querySelector('#log-task').dispatchEvent(new Event('change'))`))
		e.waitJS(t, ctx, "only the task's lines", `[...document.querySelectorAll('#logs .line')].every(l => l.dataset.task === 'talk')`, 5*time.Second)
	})

	t.Run("RunWithoutLogLinesSaysSoOnceItEnded", func(t *testing.T) {
		t.Parallel()
		// a Go handler that logs nothing and succeeds writes no log line
		d := e.deploy(t, map[string]any{"name": "ui-quiet", "work_queue": "uitest",
			"flow": map[string]any{"name": "quietflow", "tasks": []any{map[string]any{"name": "quiet", "handler": bench.NoopHandler}}}})
		run := e.waitRun(t, e.startRun(t, d.ID, nil).ID, "the end", terminal)
		if run.State.Type != "COMPLETED" {
			t.Fatalf("the run ended %s, want COMPLETED", run.State.Type)
		}
		ctx := e.tab(t)
		e.open(t, ctx, "/runs/"+run.ID)
		e.waitJS(t, ctx, "no lines, not 'yet'", `document.querySelector('#logs .empty') && document.querySelector('#logs .empty').textContent === 'No log lines.'`, 15*time.Second)
		e.run(t, ctx, "filter by task", fill(`#log-task`, "quiet"), js(`document.querySelector('#log-task').dispatchEvent(new Event('change'))`))
		e.waitJS(t, ctx, "none from the task", `document.querySelector('#logs .empty').textContent === 'No log lines from quiet.'`, 5*time.Second)
	})

	t.Run("FiltersNarrowTheTableAndSurviveReload", func(t *testing.T) {
		t.Parallel()
		later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		for _, name := range []string{"alpha", "beta"} {
			d := e.deploy(t, map[string]any{"name": "ui-filter-" + name, "work_queue": "filterq", "tags": []string{name, "filtertest"},
				"flow": map[string]any{"name": name + "flow", "tasks": []any{shellTask("t", "true")}}})
			e.startRun(t, d.ID, map[string]any{"scheduled_at": later})
			if name == "alpha" {
				e.startRun(t, d.ID, map[string]any{"scheduled_at": later})
			}
		}
		ctx := e.tab(t)
		rows := `document.querySelectorAll('#runs-table tbody tr').length`
		e.open(t, ctx, "/runs?upcoming=true&tag=filtertest") // runs scheduled for later: the Upcoming tab
		e.waitJS(t, ctx, "three runs", rows+` === 3`, 15*time.Second)
		e.run(t, ctx, "filter by name", fill(`#f-name`, "alphaflow"), click(`form.filters button[type="submit"]`))
		e.waitJS(t, ctx, "two runs named alphaflow", rows+` === 2 && location.search.includes('name=alphaflow') && [...document.querySelectorAll('#runs-table tbody tr')].every(r => r.innerText.includes('alphaflow'))`, 10*time.Second)
		e.run(t, ctx, "reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`body[data-ready="true"]`)))
		e.waitJS(t, ctx, "the same two runs after the reload", rows+` === 2 && document.querySelector('#f-name').value === 'alphaflow' && document.querySelector('#f-tag').value === 'filtertest'`, 10*time.Second)
		e.screenshot(t, ctx, "runs-filtered")
		e.run(t, ctx, "filter by state", fill(`#f-state`, "COMPLETED"), click(`form.filters button[type="submit"]`))
		e.waitJS(t, ctx, "no completed alphaflow run", rows+` === 0 && document.querySelector('#runs-table').innerText.includes('No run matches') && location.search.includes('state=COMPLETED')`, 10*time.Second)
		e.run(t, ctx, "filter by deployment", fill(`#f-state`, ""), fill(`#f-name`, ""),
			fill(`#f-deployment`, "ui-filter-beta"), click(`form.filters button[type="submit"]`))
		e.waitJS(t, ctx, "the beta run", rows+` === 1 && document.querySelector('#runs-table tbody tr').innerText.includes('ui-filter-beta')`, 10*time.Second)
		e.run(t, ctx, "go back", chromedp.NavigateBack())
		e.waitJS(t, ctx, "the state filter again", `location.search.includes('state=COMPLETED') && document.querySelector('#f-state').value === 'COMPLETED'`, 10*time.Second)
	})

	t.Run("CancelShowsTheAPIsAnswer", func(t *testing.T) {
		t.Parallel()
		d := e.deploy(t, map[string]any{"name": "ui-cancel", "work_queue": "uitest",
			"flow": map[string]any{"name": "cancelflow", "tasks": []any{shellTask("t", "true")}}})
		run := e.startRun(t, d.ID, map[string]any{"scheduled_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
		ctx := e.tab(t)
		e.open(t, ctx, "/runs/"+run.ID)
		e.waitJS(t, ctx, "a SCHEDULED run with Cancel enabled", `document.querySelector('#run-state .badge').dataset.state === 'SCHEDULED' && !document.querySelector('#cancel-run').disabled`, 10*time.Second)
		e.run(t, ctx, "click Cancel", click(`#cancel-run`))
		e.waitJS(t, ctx, "the answer", `['ok', 'error'].some(c => document.querySelector('#action-message').classList.contains(c))`, 15*time.Second)
		msg := evalJS[string](t, ctx, `document.querySelector('#action-message').textContent`)
		var after apiRun
		e.mustAPI(t, http.MethodGet, "/runs/"+run.ID, nil, &after)
		if strings.HasPrefix(after.State.Type, "CANCELL") {
			if !strings.Contains(msg, "Cancel requested") || !strings.Contains(msg, after.State.Type) {
				t.Errorf("the run is %s, the page says %q", after.State.Type, msg)
			}
			e.waitJS(t, ctx, "the new state everywhere", `document.querySelector('#run-state .badge').dataset.state.startsWith('CANCELL')
				&& document.querySelector('#run-details .badge').dataset.state.startsWith('CANCELL')
				&& !!document.querySelector('#audit tr[data-type^="FlowRunCancel"]')`, 10*time.Second)
		} else {
			// cancelling is refused (not built yet, 501): the page shows the API's own message
			var apiErr struct {
				Error struct{ Code, Message string }
			}
			code := e.apiError(t, http.MethodPost, "/runs/"+run.ID+"/cancel", &apiErr)
			if !strings.Contains(msg, strconv.Itoa(code)) || !strings.Contains(msg, apiErr.Error.Message) || apiErr.Error.Message == "" {
				t.Errorf("the API answers %d %q, the page says %q", code, apiErr.Error.Message, msg)
			}
		}
		e.screenshot(t, ctx, "run-cancel")
	})

	t.Run("HistorySliderShowsTheEarlierState", func(t *testing.T) {
		t.Parallel()
		d := e.deploy(t, map[string]any{"name": "ui-history", "work_queue": "uitest",
			"flow": map[string]any{"name": "historyflow", "tasks": []any{
				shellTask("first", "echo one"),
				shellTask("second", "echo two", "first"),
			}}})
		run := e.startRun(t, d.ID, nil)
		run = e.waitRun(t, run.ID, "completion", func(r apiRun) bool { return r.State.Type == "COMPLETED" })
		var events struct {
			Items []struct {
				Type     string `json:"type"`
				TaskName string `json:"task_name"`
			} `json:"items"`
		}
		e.mustAPI(t, http.MethodGet, "/runs/"+run.ID+"/events", nil, &events)
		firstDone := 0
		for i, ev := range events.Items {
			if ev.Type == "TaskRunCompleted" && ev.TaskName == "first" {
				firstDone = i + 1
			}
		}
		if firstDone == 0 {
			t.Fatalf("no TaskRunCompleted of first in %+v", events.Items)
		}
		ctx := e.tab(t)
		e.open(t, ctx, "/runs/"+run.ID)
		e.waitJS(t, ctx, "the slider at the last event", sel(`document.querySelector('#history-slider').max === '%d' && document.querySelector('#history-slider').value === '%d'`, len(events.Items), len(events.Items)), 10*time.Second)
		slide := func(k int) chromedp.Action[chromedp.Void] {
			return js(sel(`(() => { const s = document.querySelector('#history-slider'); s.value = '%d'; s.dispatchEvent(new Event('input')); })()`, k))
		}
		e.run(t, ctx, "slide to the first event", slide(1))
		e.waitJS(t, ctx, "the run as it was first: SCHEDULED or PENDING", `(() => { const b = document.querySelector('#history-state .badge'); return !document.querySelector('#history-banner').hidden && !!b && ['SCHEDULED', 'PENDING'].includes(b.dataset.state) })()`, 10*time.Second)
		e.waitJS(t, ctx, "no completed task at the first event", `document.querySelectorAll('svg.graph g.node[data-state="COMPLETED"]').length === 0`, 5*time.Second)
		e.screenshot(t, ctx, "run-history-first-event")
		e.run(t, ctx, "slide to first's completion", slide(firstDone))
		e.waitJS(t, ctx, "first COMPLETED, second not yet", `(() => {
			const f = document.querySelector('svg.graph g.node[data-task="first"]'), s = document.querySelector('svg.graph g.node[data-task="second"]');
			return !!f && !!s && f.dataset.state === 'COMPLETED' && s.dataset.state !== 'COMPLETED' && document.querySelector('#history-state .badge').dataset.state === 'RUNNING' })()`, 10*time.Second)
		e.screenshot(t, ctx, "run-history-middle")
		e.run(t, ctx, "back to now", click(`#history-live`))
		e.waitJS(t, ctx, "every task COMPLETED now", `document.querySelector('#history-banner').hidden && document.querySelectorAll('svg.graph g.node[data-state="COMPLETED"]').length === 2`, 10*time.Second)
	})

	t.Run("AsksForATokenWhenTheAPIAnswers401", func(t *testing.T) {
		t.Parallel()
		const token = "s3cret-token"
		ctx := e.tab(t)
		// the browser answers 401 for the API until the request carries the token
		paused := chromedp.Events(ctx, fetch.RequestPaused)
		if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*/api/v1/deployments*"}}}); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var authorized int
		go func() {
			for ev, err := range paused {
				if err != nil {
					return
				}
				auth := ""
				for k, v := range ev.Request.Headers {
					if strings.EqualFold(k, "Authorization") {
						auth, _ = v.(string)
					}
				}
				if auth == "Bearer "+token {
					mu.Lock()
					authorized++
					mu.Unlock()
					_, _ = chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
					continue
				}
				_, _ = chromedp.Call(ctx, fetch.FulfillRequest, fetch.FulfillRequestParams{
					RequestID: ev.RequestID, ResponseCode: 401,
					ResponseHeaders: []*fetch.HeaderEntry{{Name: "Content-Type", Value: "application/json"}},
					Body:            []byte(`{"error": {"code": "unauthorized", "message": "an API token is required", "details": []}}`),
				})
			}
		}()
		e.run(t, ctx, "open the deployments", chromedp.Navigate(e.url+"/deployments"))
		e.waitJS(t, ctx, "the token dialog", `document.querySelector('#token-dialog').open && document.querySelector('#token-reason').textContent.includes('an API token is required')`, 10*time.Second)
		e.screenshot(t, ctx, "token-dialog")
		e.run(t, ctx, "give the token", fill(`#token-input`, token), click(`#token-form button[type="submit"]`))
		e.waitJS(t, ctx, "the page, with the token kept", sel(`!document.querySelector('#token-dialog').open && localStorage.getItem('ordo.apiToken') === %s
			&& !!document.querySelector('#deployments table, #deployments .empty')`, jsString(token)), 10*time.Second)
		mu.Lock()
		defer mu.Unlock()
		if authorized == 0 {
			t.Fatal("no request carried Authorization: Bearer with the token")
		}
	})

	t.Run("SubFlowLinksParentAndChild", func(t *testing.T) {
		t.Parallel()
		e.deploy(t, map[string]any{"name": "ui-child", "work_queue": "uitest",
			"flow": map[string]any{"name": "childflow", "tasks": []any{shellTask("inner", "echo inner")}}})
		parent := e.deploy(t, map[string]any{"name": "ui-parent", "work_queue": "uitest",
			"flow": map[string]any{"name": "parentflow", "tasks": []any{
				map[string]any{"name": "child", "deployment": "ui-child"},
			}}})
		run := e.startRun(t, parent.ID, nil)
		run = e.waitRun(t, run.ID, "the end", terminal)
		var full struct {
			TaskRuns []struct {
				ChildFlowRunID *string `json:"child_flow_run_id"`
			} `json:"task_runs"`
		}
		e.mustAPI(t, http.MethodGet, "/runs/"+run.ID, nil, &full)
		if len(full.TaskRuns) != 1 || full.TaskRuns[0].ChildFlowRunID == nil {
			t.Skipf("sub-flows do not run in this build yet: the parent ended %s with no child run", run.State.Type)
		}
		child := *full.TaskRuns[0].ChildFlowRunID
		ctx := e.tab(t)
		e.open(t, ctx, "/runs/"+run.ID)
		e.waitJS(t, ctx, "the link to the child run", sel(`!!document.querySelector('#child-runs a[href="/runs/%s"]')`, child), 10*time.Second)
		e.screenshot(t, ctx, "run-subflow-parent")
		e.run(t, ctx, "open the child", chromedp.Click(chromedp.CSS(sel(`#child-runs a[href="/runs/%s"]`, child))), chromedp.WaitVisible(chromedp.CSS(`body[data-ready="true"]`)))
		e.waitJS(t, ctx, "the link back to the parent", sel(`location.pathname === '/runs/%s' && !!document.querySelector('#parent-run[href="/runs/%s"]')`, child, run.ID), 10*time.Second)
	})

	t.Run("ScheduleInWords", func(t *testing.T) {
		t.Parallel()
		ctx := e.tab(t)
		e.open(t, ctx, "/deployments")
		got := evalJS[map[string]string](t, ctx, `import('/assets/js/schedule.js').then(m => ({
			i300: m.describeSchedule({interval_seconds: 300}),
			i3600: m.describeSchedule({interval_seconds: 3600}),
			i5400: m.describeSchedule({interval_seconds: 5400}),
			c5: m.describeCron('*/5 * * * *'),
			hourly: m.describeCron('@hourly'),
			daily: m.describeCron('0 9 * * *'),
			weekdays: m.describeCron('30 2 * * 1-5'),
			monthly: m.describeCron('0 0 1 * *'),
			tz: m.describeSchedule({cron: '0 9 * * MON', timezone: 'Europe/Paris'}),
		}))`)
		want := map[string]string{
			"i300": "Every 5 minutes", "i3600": "Every hour", "i5400": "Every 1 hour 30 minutes", "c5": "every 5 minutes",
			"hourly": "every hour, on the hour", "daily": "at 09:00 every day", "weekdays": "at 02:30, on Monday to Friday",
			"monthly": "at 00:00, on day 1 of the month", "tz": "At 09:00, on Monday (Europe/Paris)",
		}
		for k, w := range want {
			if got[k] != w {
				t.Errorf("%s: got %q, want %q", k, got[k], w)
			}
		}
	})
}

// apiError sends a request, decodes the error envelope of its answer and
// returns its status.
func (e *uiEnv) apiError(t *testing.T, method, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+"/api/v1"+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("%s %s: decode the error: %v", method, path, err)
	}
	return resp.StatusCode
}

// BenchmarkRunsPageFirstRender measures the server side of the runs page's
// first render: its HTML and the first API call its script makes
// (GET /api/v1/runs?limit=50), with ORDO_BENCH_RUNS flow runs in the read
// model (default 10,000; the target is under 300 ms with 1,000,000).
// The runs are inserted directly into flow_runs, as the projector would
// leave them.
func BenchmarkRunsPageFirstRender(b *testing.B) {
	srv, n := benchRunsServer(b)
	get := func(path string) int {
		rec := httptest.NewRecorder()
		srv.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			b.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body.String())
		}
		return rec.Body.Len()
	}
	if n > 0 {
		if size := get("/api/v1/runs?limit=50"); size < 50*200 {
			b.Fatalf("the first page is only %d bytes", size)
		}
	}
	b.Run("FirstPage", func(b *testing.B) {
		for b.Loop() {
			get("/runs")
			get("/api/v1/runs?limit=50")
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/render")
	})
	// the same page with a filter from the URL, for comparison
	for _, f := range []struct{ name, query string }{
		{"State", "state=FAILED"},
		{"Deployment", "deployment=bench-3"},
		{"Tag", "tag=shard-7"},
		{"NameRare", "name=bench-12345"},
	} {
		b.Run("Filter"+f.name, func(b *testing.B) {
			for b.Loop() {
				get("/runs?" + f.query)
				get("/api/v1/runs?limit=50&" + f.query)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/render")
		})
	}
}

// BenchmarkRunsAPIConcurrent is scenario 6 of `ordo bench`
// (internal/bench): GET /api/v1/runs with filters over 1,000,000 runs from
// 32 concurrent clients over HTTP, against the server `ordo server` runs.
// As a Go benchmark, to profile it:
//
//	make bench BENCH=BenchmarkRunsAPIConcurrent PKGS=./cmd/ordo BENCHFLAGS=-cpuprofile=cpu.out
func BenchmarkRunsAPIConcurrent(b *testing.B) {
	benchtest.Run(b, "runs-api", bench.Options{ServeAPI: serveAPI})
}

// benchRunsServer returns a server on a database holding ORDO_BENCH_RUNS
// finished flow runs (default 10,000), inserted directly into flow_runs as
// the projector would leave them, and their number.
func benchRunsServer(b *testing.B) (*server, int) {
	b.Helper()
	n := 10_000
	if v := os.Getenv("ORDO_BENCH_RUNS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatalf("ORDO_BENCH_RUNS: %v", err)
		}
	}
	pool := pgtest.Pool(b)
	ctx := context.Background()
	start := time.Now()
	if err := bench.LoadRuns(ctx, bench.Env{}, pool, n); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d runs inserted in %s", n, time.Since(start).Round(time.Millisecond))
	srv, err := newServer(ctx, pool, serverOptions{addr: "127.0.0.1:0"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	return srv, n
}
