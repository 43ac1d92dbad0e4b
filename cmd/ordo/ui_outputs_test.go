package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/projections/projtest"
)

// A report a task wrote, with what must not run or link in the UI.
const uiReport = "# Model report\n\n" +
	"The model is **good**: see [the docs](https://example.com/docs) and `r2`.\n\n" +
	"- first\n- second\n\n" +
	"| metric | value |\n|---|---|\n| r2 | 0.96 |\n\n" +
	"<script>window.pwned = true</script>\n\n" +
	"<img src=x onerror=\"window.pwned = true\">\n\n" +
	"[click me](javascript:window.pwned=true)\n"

// TestUIOutputsMetricsAndCharts: a run's outputs are listed, its markdown
// report rendered without running its script or linking javascript:, its
// CSV shown as a table and its PNG as an image; the deployment page charts
// its metric across three runs, each point opening its run; the runs list
// shows a metric as a column.
func TestUIOutputsMetricsAndCharts(t *testing.T) {
	t.Parallel()
	e := startUI(t)
	d := e.deploy(t, map[string]any{"name": "metrics-ui", "work_queue": "none", "flow": map[string]any{"name": "ml", "tasks": []any{shellTask("evaluate", "true")}}})
	depID := uuid.MustParse(d.ID)

	blobs, err := blobstore.OpenDir(e.blobDir)
	if err != nil {
		t.Fatal(err)
	}
	put := func(name, mediaType string, content []byte) domain.Output {
		return putOutput(t, blobs, name, mediaType, content)
	}
	img := image.NewRGBA(image.Rect(0, 0, 40, 30))
	for x := range 40 {
		img.Set(x, x*30/40, color.RGBA{200, 30, 30, 255})
	}
	var pngBytes bytes.Buffer
	if err := png.Encode(&pngBytes, img); err != nil {
		t.Fatal(err)
	}
	outs := []domain.Output{
		put("report.md", "text/markdown", []byte(uiReport)),
		put("data/predictions.csv", "text/csv", []byte("house,price,predicted\n1,\"100,000\",98000\n2,250000,251000\n")),
		put("plots/residuals.png", "image/png", pngBytes.Bytes()),
		put("model.pkl", "application/octet-stream", []byte("weights")),
	}

	store := eventstore.New(e.pool, domain.NewRegistry())
	log := projtest.NewLog(t, store)
	flow := domain.FlowSpec{Name: "ml", Tasks: []domain.TaskSpec{{Name: "evaluate", Command: []string{"true"}}}}
	var runs []*projtest.Run
	start := time.Now().Add(-time.Hour)
	for i := range 3 {
		run := log.CreateRun(projtest.RunSpec{Name: fmt.Sprintf("metrics-ui-%d", i), DeploymentID: depID, DeploymentName: d.Name, Flow: flow, ScheduledAt: start.Add(time.Duration(i) * time.Minute)})
		run.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
		var o []domain.Output
		if i == 2 {
			o = outs
		}
		run.Task("evaluate", domain.TaskRunStarted{Attempt: 1, Worker: "w1"},
			domain.TaskRunCompleted{Attempt: 1, Outputs: o, Metrics: map[string]float64{"r2": 0.9 + float64(i)/100, "rmse": 12 - float64(i)}})
		run.Flow(domain.FlowRunCompleted{})
		runs = append(runs, run)
	}
	last := runs[2].ID.String()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) { // the projector applies the events
		var r apiRun
		if e.api(t, http.MethodGet, "/runs/"+last, nil, &r) == 200 && terminal(r) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the runs written are not in the read models after 20 s")
		}
	}

	t.Run("RunPageListsAndPreviews", func(t *testing.T) {
		ctx := e.tab(t)
		e.open(t, ctx, "/runs/"+last)
		e.waitJS(t, ctx, "four outputs listed", `document.querySelectorAll('#outputs-table tbody tr').length === 4`, 10*time.Second)
		if got := evalJS[string](t, ctx, `document.querySelector('#metrics-table tr[data-metric="r2"]').innerText`); !strings.Contains(got, "0.92") || !strings.Contains(got, "evaluate") {
			t.Errorf("metrics row of r2: %q", got)
		}
		if got := evalJS[string](t, ctx, `document.querySelector('#outputs-table tr[data-output="model.pkl"]').innerText`); !strings.Contains(got, "7 B") || !strings.Contains(got, "Download") {
			t.Errorf("model.pkl row: %q", got)
		}
		// a download link fetches the bytes, with the token cookie if any
		href := evalJS[string](t, ctx, `document.querySelector('#outputs-table tr[data-output="model.pkl"] a.download-output').href`)
		resp, err := http.Get(href)
		if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Disposition") == "" {
			t.Errorf("download link %s: %v %v", href, err, resp)
		}
		if resp != nil {
			resp.Body.Close()
		}

		e.run(t, ctx, "preview the report", click(`tr[data-output="report.md"] button.preview-output`))
		e.waitJS(t, ctx, "the markdown rendered", `!!document.querySelector('#output-preview .markdown h1')`, 10*time.Second)
		checks := map[string]string{
			"heading":              `document.querySelector('#output-preview .markdown h1').textContent === 'Model report'`,
			"strong":               `document.querySelector('#output-preview .markdown strong').textContent === 'good'`,
			"list":                 `document.querySelectorAll('#output-preview .markdown ul li').length === 2`,
			"table":                `document.querySelector('#output-preview .markdown table td').textContent === 'r2'`,
			"https link":           `document.querySelector('#output-preview .markdown a').href === 'https://example.com/docs'`,
			"no javascript: link":  `[...document.querySelectorAll('#output-preview a')].every((a) => a.protocol === 'https:') && !!document.querySelector('#output-preview .unsafe-link')`,
			"script shown as text": `document.querySelectorAll('#output-preview script, #output-preview img').length === 0 && document.querySelector('#output-preview').textContent.includes('<script>')`,
		}
		for what, expr := range checks {
			if !evalJS[bool](t, ctx, expr) {
				t.Errorf("markdown %s: %s", what, expr)
			}
		}
		e.run(t, ctx, "click the javascript: text", click(`#output-preview .unsafe-link`))
		time.Sleep(200 * time.Millisecond)
		if evalJS[bool](t, ctx, `window.pwned === true`) {
			t.Fatal("the markdown ran script")
		}

		e.run(t, ctx, "preview the CSV", click(`tr[data-output="data/predictions.csv"] button.preview-output`))
		e.waitJS(t, ctx, "the CSV as a table", `document.querySelectorAll('#output-preview table.csv tbody tr').length === 2`, 10*time.Second)
		if got := evalJS[string](t, ctx, `document.querySelector('#output-preview table.csv tbody td:nth-child(2)').textContent`); got != "100,000" {
			t.Errorf("a quoted CSV field: %q", got)
		}

		e.run(t, ctx, "preview the PNG", click(`tr[data-output="plots/residuals.png"] button.preview-output`))
		e.waitJS(t, ctx, "the PNG shown", `(() => { const i = document.querySelector('#output-preview img.output-image'); return !!i && i.complete && i.naturalWidth === 40; })()`, 10*time.Second)
		if evalJS[bool](t, ctx, `!!document.querySelector('tr[data-output="model.pkl"] button.preview-output')`) {
			t.Error("a pickle has a preview")
		}
		e.screenshot(t, ctx, "run-outputs")
	})

	t.Run("DeploymentChartsMetrics", func(t *testing.T) {
		ctx := e.tab(t)
		e.open(t, ctx, "/deployments/"+d.ID)
		e.waitJS(t, ctx, "a chart of r2 with three points", `document.querySelectorAll('svg.metric-chart[data-metric="r2"] a.point').length === 3`, 10*time.Second)
		if n := evalJS[int](t, ctx, `document.querySelectorAll('svg.metric-chart').length`); n != 2 {
			t.Errorf("%d charts, want r2 and rmse", n)
		}
		e.screenshot(t, ctx, "deployment-metrics")
		e.run(t, ctx, "click the newest point", chromedp.Click(chromedp.CSS(`svg.metric-chart[data-metric="r2"] a.point[data-run-id="`+last+`"] circle`)))
		e.run(t, ctx, "the run page loaded", chromedp.WaitVisible(chromedp.CSS(`body[data-page="run"][data-ready="true"]`)))
		if p := evalJS[string](t, ctx, `location.pathname`); p != "/runs/"+last {
			t.Errorf("the point opened %s, want /runs/%s", p, last)
		}
	})

	t.Run("RunsListMetricColumn", func(t *testing.T) {
		ctx := e.tab(t)
		e.open(t, ctx, "/runs")
		e.waitJS(t, ctx, "the metric selector lists r2", `[...document.querySelectorAll('#f-metric option')].some((o) => o.value === 'r2')`, 10*time.Second)
		e.run(t, ctx, "choose r2", fill(`#f-metric`, "r2"))
		e.waitJS(t, ctx, "an r2 column", `!!document.querySelector('#metric-column') && location.search.includes('metric=r2')`, 10*time.Second)
		got := evalJS[string](t, ctx, `document.querySelector('tr[data-run-id="`+last+`"] .metric-cell').textContent`)
		if got != "0.92" {
			t.Errorf("r2 of the last run in the list: %q", got)
		}
	})
}

// click clicks an element found when the click happens (a live refresh may
// have replaced the one found before).
func click(selector string) chromedp.Action[chromedp.Void] {
	return js(fmt.Sprintf(`document.querySelector(%s).click()`, jsString(selector)))
}
