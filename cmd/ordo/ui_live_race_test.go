package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ordoflow/ordo/api/ui"
)

// TestUIShowsARunAnnouncedBeforeItsRow: a busy server may announce a new
// run before its read models hold it (it waits for them a few seconds at
// most), so the runs page's reload finds no row. The run's next change must
// make the page look again, and the row appears. The server here is a stub
// whose API leaves the run out until told, and whose live stream sends what
// the test says, when it says.
func TestUIShowsARunAnnouncedBeforeItsRow(t *testing.T) {
	if testing.Short() {
		t.Skip("browser tests are not short")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("no Chromium at %s", chromiumPath)
	}
	t.Parallel()
	const id = "01936f0e-7b2a-7c3d-8e4f-5a6b7c8d9e0f"
	var (
		projected atomic.Bool  // the read models hold the run
		lists     atomic.Int32 // GET /runs requests
		send      = make(chan string, 4)
	)
	run := map[string]any{
		"id": id, "name": "announced-early", "deployment_id": "01936f0e-7b2a-7c3d-8e4f-000000000001",
		"deployment_name": "etl", "work_queue": "default", "tags": []string{},
		"state": map[string]string{"type": "PENDING", "name": "Pending"}, "scheduled_at": time.Now().UTC().Format(time.RFC3339Nano),
	}
	pages := ui.Handler(ui.Options{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/deployments", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"items": []any{}})
	})
	mux.HandleFunc("GET /api/v1/runs", func(w http.ResponseWriter, r *http.Request) {
		lists.Add(1)
		items := []any{}
		if projected.Load() {
			items = append(items, run)
		}
		writeJSON(w, map[string]any{"items": items})
	})
	mux.HandleFunc("GET /api/v1/runs/{id}", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, run) })
	mux.HandleFunc("GET /ui/live", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		fmt.Fprint(w, "retry: 2000\nid: 1-1\nevent: ready\ndata: {\"checkpoint\":\"1-1\"}\n\n")
		w.(http.Flusher).Flush()
		for pos := 2; ; pos++ {
			select {
			case <-r.Context().Done():
				return
			case typ := <-send:
				fmt.Fprintf(w, "id: %d-%d\ndata: {\"stream_id\":%q,\"stream_type\":\"flow_run\",\"type\":%q,\"flow_run_id\":%q,\"position\":%d}\n\n", pos, pos, id, typ, id, pos)
				w.(http.Flusher).Flush()
			}
		}
	})
	mux.Handle("/", pages)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	e := &uiEnv{t: t, url: srv.URL, browser: newBrowser(t)}
	ctx := e.tab(t)
	e.open(t, ctx, "/runs")
	e.waitJS(t, ctx, "the empty table", `document.querySelector('#runs-table').innerText.includes('No runs yet')`, 10*time.Second)
	loaded := lists.Load()
	send <- "FlowRunCreated"
	deadline := time.Now().Add(10 * time.Second)
	for lists.Load() == loaded {
		if time.Now().After(deadline) {
			t.Fatal("the page did not read the runs again after a run was created")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // that read found no run; the page shows none
	if strings.Contains(evalJS[string](t, ctx, `document.querySelector('#runs-table').innerText`), "announced-early") {
		t.Fatal("the stub showed the run before the read models had it")
	}
	projected.Store(true)
	send <- "FlowRunStarted"
	e.waitJS(t, ctx, "the run's row", fmt.Sprintf(`!!document.querySelector('tr[data-run-id=%q]')`, id), 5*time.Second)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// TestUITabTakingOverTheLiveStreamResumesWhereItEnded: the tabs of a
// browser share one live stream, read by the tab that holds a lock. When
// that tab closes, the tab that takes over must resume after the last event
// read, not at the end of the log: events in between would be lost.
func TestUITabTakingOverTheLiveStreamResumesWhereItEnded(t *testing.T) {
	if testing.Short() {
		t.Skip("browser tests are not short")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("no Chromium at %s", chromiumPath)
	}
	t.Parallel()
	var (
		lists    atomic.Int32
		resumes  = make(chan string, 8) // Last-Event-ID of each stream opened
		messages = make(chan string, 4)
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/deployments", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"items": []any{}})
	})
	mux.HandleFunc("GET /api/v1/runs", func(w http.ResponseWriter, r *http.Request) {
		lists.Add(1)
		writeJSON(w, map[string]any{"items": []any{}})
	})
	mux.HandleFunc("GET /ui/live", func(w http.ResponseWriter, r *http.Request) {
		after := r.Header.Get("Last-Event-ID")
		resumes <- after
		if after == "" {
			after = "1-1"
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "id: %s\nevent: ready\ndata: {\"checkpoint\":%q}\n\n", after, after)
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case m := <-messages:
				fmt.Fprint(w, m)
				w.(http.Flusher).Flush()
			}
		}
	})
	mux.Handle("/", ui.Handler(ui.Options{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	e := &uiEnv{t: t, url: srv.URL, browser: newBrowser(t)}
	first, closeFirst := chromedp.NewContext(e.browser)
	t.Cleanup(closeFirst)
	e.open(t, first, "/runs")
	if got := <-resumes; got != "" {
		t.Fatalf("the first tab resumed after %q, want the end of the log", got)
	}
	second := e.tab(t)
	e.open(t, second, "/runs")
	before := lists.Load()
	messages <- "id: 7-7\ndata: {\"stream_id\":\"01936f0e-7b2a-7c3d-8e4f-5a6b7c8d9e0f\",\"stream_type\":\"flow_run\",\"type\":\"FlowRunCreated\",\"position\":7}\n\n"
	waitFor(t, 10*time.Second, "both tabs to read the runs again", func() bool { return lists.Load() >= before+2 })
	closeFirst() // the second tab takes the stream over
	select {
	case got := <-resumes:
		if got != "7-7" {
			t.Fatalf("the tab that took over resumed after %q, want 7-7, the last event the first tab read", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no tab took the live stream over")
	}
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
