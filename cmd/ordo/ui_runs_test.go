package main

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestUIRunsUpcomingAndRunPage drives the runs page's two tabs (runs that
// started or are due, and upcoming ones) and the run page's layout: actions
// that match the run's state, a chain graph that fits the window, timeline
// labels that stay off short bars.
func TestUIRunsUpcomingAndRunPage(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("browser tests are not short")
	}
	e := startUI(t, "uirunpage")
	visible := func(selector string) string {
		return sel(`(() => { const b = document.querySelector(%q); return !!b && getComputedStyle(b).display !== 'none' && b.offsetParent !== null })()`, selector)
	}

	t.Run("UpcomingRunsAreApart", func(t *testing.T) {
		t.Parallel()
		// no worker takes this queue: the due run stays SCHEDULED
		d := e.deploy(t, map[string]any{"name": "ui-upcoming", "work_queue": "uiupcoming-idle",
			"flow": map[string]any{"name": "upflow", "tasks": []any{shellTask("t", "true")}}})
		due := e.startRun(t, d.ID, nil)
		ahead := e.startRun(t, d.ID, map[string]any{"scheduled_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
		row := func(id string) string { return sel(`!!document.querySelector('#runs-table tr[data-run-id=%q]')`, id) }
		ctx := e.tab(t)
		e.open(t, ctx, "/runs?deployment=ui-upcoming")
		e.waitJS(t, ctx, "the due run, and not the one scheduled for later", row(due.ID)+` && !`+row(ahead.ID)+` && document.querySelector('#tab-runs').getAttribute('aria-selected') === 'true'`, 15*time.Second)
		e.screenshot(t, ctx, "runs-without-upcoming")
		e.run(t, ctx, "open the Upcoming tab", click(`#tab-upcoming`))
		e.waitJS(t, ctx, "the run scheduled for later only", row(ahead.ID)+` && !`+row(due.ID)+` && new URLSearchParams(location.search).get('upcoming') === 'true' && location.search.includes('deployment=ui-upcoming')
			&& document.querySelector('#tab-upcoming').getAttribute('aria-selected') === 'true'`, 15*time.Second)
		e.run(t, ctx, "reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`body[data-ready="true"]`)))
		e.waitJS(t, ctx, "the Upcoming tab again", row(ahead.ID)+` && !`+row(due.ID), 15*time.Second)
		e.screenshot(t, ctx, "runs-upcoming")
		e.run(t, ctx, "back to the runs", click(`#tab-runs`))
		e.waitJS(t, ctx, "the due run again", row(due.ID)+` && !`+row(ahead.ID)+` && new URLSearchParams(location.search).get('upcoming') === null`, 15*time.Second)
	})

	t.Run("ActionsMatchTheRunsState", func(t *testing.T) {
		t.Parallel()
		d := e.deploy(t, map[string]any{"name": "ui-actions", "work_queue": "uirunpage", "parameters": map[string]any{"fail": "no"},
			"flow": map[string]any{"name": "actionsflow", "tasks": []any{shellTask("t", `test "$(echo "$ORDO_PARAMETERS" | grep -c '"fail":"yes"')" = 0`)}}})
		completed := e.waitRun(t, e.startRun(t, d.ID, nil).ID, "the end", terminal)
		failed := e.waitRun(t, e.startRun(t, d.ID, map[string]any{"parameters": map[string]any{"fail": "yes"}}).ID, "the end", terminal)
		scheduled := e.startRun(t, d.ID, map[string]any{"scheduled_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
		if completed.State.Type != "COMPLETED" || failed.State.Type != "FAILED" {
			t.Fatalf("runs ended %s and %s, want COMPLETED and FAILED", completed.State.Type, failed.State.Type)
		}
		ctx := e.tab(t)
		for _, c := range []struct {
			run           apiRun
			cancel, retry bool
		}{{completed, false, false}, {failed, false, true}, {scheduled, true, false}} {
			e.open(t, ctx, "/runs/"+c.run.ID)
			e.waitJS(t, ctx, "the run's state", sel(`document.querySelector('#run-state .badge').dataset.state === %q`, c.run.State.Type), 15*time.Second)
			if got := evalJS[bool](t, ctx, visible(`#cancel-run`)); got != c.cancel {
				t.Errorf("%s run: Cancel shown %v, want %v", c.run.State.Type, got, c.cancel)
			}
			if got := evalJS[bool](t, ctx, visible(`#retry-run`)); got != c.retry {
				t.Errorf("%s run: Retry shown %v, want %v", c.run.State.Type, got, c.retry)
			}
		}
	})

	t.Run("ChainOfFiveFitsAt1400", func(t *testing.T) {
		t.Parallel()
		var tasks []any
		for i, name := range []string{"load_data", "feature_engineering", "split", "train_model", "evaluate"} {
			if i == 0 {
				tasks = append(tasks, shellTask(name, "true"))
			} else {
				tasks = append(tasks, shellTask(name, "true", tasks[i-1].(map[string]any)["name"].(string)))
			}
		}
		d := e.deploy(t, map[string]any{"name": "ui-chain", "work_queue": "uichain-idle", "flow": map[string]any{"name": "chain", "tasks": tasks}})
		run := e.startRun(t, d.ID, map[string]any{"scheduled_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
		ctx := e.tab(t)
		e.run(t, ctx, "a window 1,400 px wide", chromedp.EmulateViewport(1400, 900))
		e.open(t, ctx, "/runs/"+run.ID)
		e.waitJS(t, ctx, "five nodes", `document.querySelectorAll('svg.graph g.node').length === 5`, 15*time.Second)
		type box struct {
			Task                     string
			Left, Right, Top, Bottom float64
		}
		got := evalJS[struct {
			Wrap         box
			Nodes        []box
			ScrollWidth  int
			ClientWidth  int
			ScrollHeight int
			ClientHeight int
		}](t, ctx, `(() => {
			const b = (el, task) => { const r = el.getBoundingClientRect(); return {Task: task || '', Left: r.left, Right: r.right, Top: r.top, Bottom: r.bottom} };
			const svg = document.querySelector('svg.graph'), wrap = svg.parentElement;
			return {Wrap: b(wrap), Nodes: [...svg.querySelectorAll('g.node')].map(g => b(g, g.dataset.task)),
				ScrollWidth: wrap.scrollWidth, ClientWidth: wrap.clientWidth, ScrollHeight: wrap.scrollHeight, ClientHeight: wrap.clientHeight};
		})()`)
		if got.ScrollWidth > got.ClientWidth {
			t.Errorf("the graph scrolls sideways at 1,400 px: %d px of content in %d", got.ScrollWidth, got.ClientWidth)
		}
		for _, n := range got.Nodes {
			if n.Left < got.Wrap.Left || n.Right > got.Wrap.Right || n.Top < got.Wrap.Top || n.Bottom > got.Wrap.Bottom {
				t.Errorf("node %s (%.0f..%.0f x %.0f..%.0f) is not within the graph's box (%.0f..%.0f x %.0f..%.0f)",
					n.Task, n.Left, n.Right, n.Top, n.Bottom, got.Wrap.Left, got.Wrap.Right, got.Wrap.Top, got.Wrap.Bottom)
			}
		}
		e.screenshot(t, ctx, "run-chain-1400")
	})

	t.Run("TimelineLabelsStayOffShortBars", func(t *testing.T) {
		t.Parallel()
		ctx := e.tab(t)
		e.open(t, ctx, "/deployments")
		// one long attempt and short ones: a label that does not fit its bar
		// must be outside it, never across its end
		type label struct {
			Task            string
			Inside, Outside bool
			Text            string
		}
		got := evalJS[[]label](t, ctx, `import('/assets/js/timeline.js').then(m => {
			const t0 = Date.parse('2026-12-06T10:00:00Z'), at = (s) => new Date(t0 + s * 1000).toISOString();
			const ev = (type, task, s, data, to) => ({stream_type: 'task_run', stream_id: task, task_name: task, type, recorded_at: at(s), data: data || {}, to_state: to});
			const events = [
				ev('TaskRunCreated', 'long', 0), ev('TaskRunCreated', 'short', 0), ev('TaskRunCreated', 'tiny', 0), ev('TaskRunCreated', 'late', 0),
				ev('TaskRunStarted', 'long', 0, {attempt: 1}), ev('TaskRunCompleted', 'long', 10, {}, {type: 'COMPLETED', name: 'Completed'}),
				ev('TaskRunStarted', 'short', 0, {attempt: 1}), ev('TaskRunFailed', 'short', 1.2, {error: 'x'}, {type: 'FAILED', name: 'TimedOut'}),
				ev('TaskRunStarted', 'tiny', 1, {attempt: 1}), ev('TaskRunCompleted', 'tiny', 1.1, {}, {type: 'COMPLETED', name: 'Completed'}),
				ev('TaskRunStarted', 'late', 9.8, {attempt: 1}), ev('TaskRunFailed', 'late', 10, {error: 'x'}, {type: 'FAILED', name: 'TimedOut'}),
			];
			const svg = m.renderTimeline(events, new Date(t0 + 10000));
			svg.style.width = '1000px';
			document.body.append(svg);
			const out = [...svg.querySelectorAll('text.bar-label')].map(l => {
				const bar = svg.querySelector('rect.attempt[data-task="' + l.dataset.task + '"]');
				const lb = l.getBBox(), x = bar.x.baseVal.value, w = bar.width.baseVal.value;
				return {Task: l.dataset.task, Text: l.textContent,
					Inside: lb.x >= x && lb.x + lb.width <= x + w,
					Outside: (lb.x >= x + w || lb.x + lb.width <= x) && lb.x >= 0 && lb.x + lb.width <= 1000};
			});
			svg.remove();
			return out;
		})`)
		tasks := map[string]bool{}
		for _, l := range got {
			tasks[l.Task] = true
			if !l.Inside && !l.Outside {
				t.Errorf("the label %q of task %s crosses its bar's end", l.Text, l.Task)
			}
		}
		for _, task := range []string{"long", "short", "tiny", "late"} {
			if !tasks[task] {
				t.Errorf("task %s has no label: %+v", task, got)
			}
		}
	})
}
