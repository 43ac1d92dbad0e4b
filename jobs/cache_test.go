package jobs_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

func TestCache(t *testing.T) {
	t.Parallel()

	// cached returns a flow whose "load" task appends a line to runs each
	// time it really runs, and is cached by policy; "use" depends on it.
	cachedFlow := func(runs string, policy domain.CachePolicy) domain.FlowSpec {
		load := sh("load", `echo run >> `+runs+`; echo "{\"table\": \"$(echo "$ORDO_PARAMETERS" | tr -d '{}" ')\"}" > "$ORDO_RESULT_PATH"`)
		load.Cache = &policy
		return domain.FlowSpec{Name: "cached", Tasks: []domain.TaskSpec{
			load, sh("use", `printf '%s' "$ORDO_INPUTS" > "$ORDO_RESULT_PATH"`, "load"),
		}}
	}

	t.Run("SecondRunHits", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{})
		runs := filepath.Join(t.TempDir(), "runs")
		flow := cachedFlow(runs, domain.CachePolicy{Key: domain.CacheKeyInputs, ExpirationSeconds: 3600})
		params := map[string]any{"table": "houses"}

		first := b.wait(t, b.create(t, flow, params).ID)
		second := b.wait(t, b.create(t, flow, params).ID)
		if first.State.Type != domain.Completed || second.State.Type != domain.Completed {
			t.Fatalf("runs ended %s and %s, want COMPLETED", first.State.Type, second.State.Type)
		}
		if n := countLines(t, runs); n != 1 {
			t.Fatalf("the cached task ran %d times, want once", n)
		}
		h := b.tasks(t, second)["load"]
		if h.run.State.Name != domain.NameCached || len(h.of("TaskRunStarted")) != 0 {
			t.Fatalf("second run's load is %s/%s with %d starts, want COMPLETED/Cached without a start", h.run.State.Type, h.run.State.Name, len(h.of("TaskRunStarted")))
		}
		c := h.of("TaskRunCached")[0].Event.(domain.TaskRunCached)
		if c.SourceTaskRunID != first.TaskRunIDs["load"] {
			t.Errorf("cached from %s, want the first run's task run %s", c.SourceTaskRunID, first.TaskRunIDs["load"])
		}
		if compact(t, second.Result) != `{"load":{"table":"table:houses"}}` || compact(t, second.Result) != compact(t, first.Result) {
			t.Errorf("results %s and %s, want the same from the cache", first.Result, second.Result)
		}
		var lines int
		if err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM task_run_logs WHERE task_run_id = $1`, second.TaskRunIDs["load"]).Scan(&lines); err != nil || lines != 0 {
			t.Errorf("the cached task has %d log lines (%v): something ran", lines, err)
		}

		// Other parameters: another key.
		third := b.wait(t, b.create(t, flow, map[string]any{"table": "flats"}).ID)
		if n := countLines(t, runs); third.State.Type != domain.Completed || n != 2 {
			t.Errorf("with other parameters: run %s and %d runs of the task, want a new run of it", third.State.Type, n)
		}
		b.validate(t)
	})

	t.Run("RefreshRunsAndReplaces", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{})
		runs := filepath.Join(t.TempDir(), "runs")
		b.wait(t, b.create(t, cachedFlow(runs, domain.CachePolicy{Key: "{{parameters.table}}"}), map[string]any{"table": "t"}).ID)
		refreshed := b.wait(t, b.create(t, cachedFlow(runs, domain.CachePolicy{Key: "{{parameters.table}}", Refresh: true}), map[string]any{"table": "t"}).ID)
		if n := countLines(t, runs); n != 2 {
			t.Fatalf("with refresh the task ran %d times in all, want 2", n)
		}
		var source string
		if err := b.pool.QueryRow(t.Context(), `SELECT task_run_id::text FROM task_cache WHERE cache_key = 'load:t'`).Scan(&source); err != nil {
			t.Fatal(err)
		}
		if source != refreshed.TaskRunIDs["load"].String() {
			t.Errorf("the cache holds the result of %s, want the refreshed run's %s", source, refreshed.TaskRunIDs["load"])
		}
		hit := b.wait(t, b.create(t, cachedFlow(runs, domain.CachePolicy{Key: "{{parameters.table}}"}), map[string]any{"table": "t"}).ID)
		if n := countLines(t, runs); n != 2 || b.tasks(t, hit)["load"].run.State.Name != domain.NameCached {
			t.Errorf("after the refresh: %d runs, load %s; want a hit", n, b.tasks(t, hit)["load"].run.State.Name)
		}
		b.validate(t)
	})

	t.Run("Expires", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{})
		runs := filepath.Join(t.TempDir(), "runs")
		flow := cachedFlow(runs, domain.CachePolicy{Key: domain.CacheKeyInputs, ExpirationSeconds: 0.3})
		b.wait(t, b.create(t, flow, nil).ID)
		time.Sleep(400 * time.Millisecond)
		fr := b.wait(t, b.create(t, flow, nil).ID)
		if n := countLines(t, runs); n != 2 || b.tasks(t, fr)["load"].run.State.Name != domain.NameCompleted {
			t.Errorf("after expiry: %d runs, want the task to run again", n)
		}
		b.validate(t)
	})
}
