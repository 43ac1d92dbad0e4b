package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ordoflow/ordo/api/ui"
)

// stubUI serves the UI's pages in front of a stub API and live stream, so
// that a browser test decides what the page reads and when: the runs list
// is runs(), and the live stream sends, after its "ready", each frame the
// test puts in live.
type stubUI struct {
	*uiEnv
	answered atomic.Int32   // GET /runs requests answered
	resumes  chan string    // the Last-Event-ID of each live stream opened
	live     chan string    // raw event-stream frames to send
	runs     func() []any   // the runs list
	run      map[string]any // GET /runs/{id}
}

func startStubUI(t *testing.T) *stubUI {
	t.Helper()
	if testing.Short() {
		t.Skip("browser tests are not short")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("no Chromium at %s", chromiumPath)
	}
	s := &stubUI{resumes: make(chan string, 8), live: make(chan string, 8), runs: func() []any { return []any{} }}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/deployments", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"items": []any{}})
	})
	mux.HandleFunc("GET /api/v1/runs", func(w http.ResponseWriter, r *http.Request) {
		items := s.runs()
		s.answered.Add(1) // counted once the answer is decided
		writeJSON(w, map[string]any{"items": items})
	})
	mux.HandleFunc("GET /api/v1/runs/{id}", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, s.run) })
	mux.HandleFunc("GET /ui/live", func(w http.ResponseWriter, r *http.Request) {
		after := r.Header.Get("Last-Event-ID")
		s.resumes <- after
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
			case frame := <-s.live:
				fmt.Fprint(w, frame)
				w.(http.Flusher).Flush()
			}
		}
	})
	mux.Handle("/", ui.Handler(ui.Options{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s.uiEnv = &uiEnv{t: t, url: srv.URL, browser: newBrowser(t)}
	return s
}

// flowRunFrame is a live message about flow run id.
func flowRunFrame(pos int, id, typ string) string {
	return fmt.Sprintf("id: %d-%d\ndata: {\"stream_id\":%q,\"stream_type\":\"flow_run\",\"type\":%q,\"flow_run_id\":%q,\"position\":%d}\n\n", pos, pos, id, typ, id, pos)
}

// quiet waits until the pages have asked for no runs list for 700 ms,
// longer than a runs page waits to reload after a live message: the reloads
// of what came before are over. It returns the number of lists answered.
func (s *stubUI) quiet(t *testing.T) int32 {
	t.Helper()
	n, since := s.answered.Load(), time.Now()
	for deadline := time.Now().Add(15 * time.Second); time.Since(since) < 700*time.Millisecond; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the pages kept reading the runs list")
		}
		if m := s.answered.Load(); m != n {
			n, since = m, time.Now()
		}
	}
	return n
}

// waitLists waits until at least n runs lists were answered.
func (s *stubUI) waitLists(t *testing.T, n int32, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); s.answered.Load() < n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestUIShowsARunAnnouncedBeforeItsRow: a busy server may announce a new
// run before its read models hold it (it waits for them a few seconds at
// most), so the runs page's reload finds no row. The server then says
// "reset" once they caught up (TestLive/SaysResetOnceReadModelsThatLaggedCatchUp),
// and the page must read the runs again and show the row.
func TestUIShowsARunAnnouncedBeforeItsRow(t *testing.T) {
	s := startStubUI(t)
	t.Parallel()
	const id = "01936f0e-7b2a-7c3d-8e4f-5a6b7c8d9e0f"
	var projected atomic.Bool // the read models hold the run
	s.run = map[string]any{
		"id": id, "name": "announced-early", "deployment_id": "01936f0e-7b2a-7c3d-8e4f-000000000001",
		"deployment_name": "etl", "work_queue": "default", "tags": []string{},
		"state": map[string]string{"type": "PENDING", "name": "Pending"}, "scheduled_at": time.Now().UTC().Format(time.RFC3339Nano),
	}
	s.runs = func() []any {
		if projected.Load() {
			return []any{s.run}
		}
		return []any{}
	}
	ctx := s.tab(t)
	s.open(t, ctx, "/runs")
	s.waitJS(t, ctx, "the empty table", `document.querySelector('#runs-table').innerText.includes('No runs yet')`, 10*time.Second)
	n := s.quiet(t)
	s.live <- flowRunFrame(2, id, "FlowRunCreated")
	s.waitLists(t, n+1, "the page to read the runs again after a run was created")
	// that read found no run; now the read models have it
	projected.Store(true)
	s.live <- "data: {\"type\":\"reset\"}\n\n"
	s.waitJS(t, ctx, "the run's row", fmt.Sprintf(`!!document.querySelector('tr[data-run-id=%q]')`, id), 5*time.Second)
}

// TestUITabTakingOverTheLiveStreamResumesWhereItEnded: the tabs of a
// browser share one live stream, read by the tab that holds a lock. When
// that tab closes, the tab that takes over must resume after the last event
// read, not at the end of the log: events in between would be lost.
func TestUITabTakingOverTheLiveStreamResumesWhereItEnded(t *testing.T) {
	s := startStubUI(t)
	t.Parallel()
	first, closeFirst := chromedp.NewContext(s.browser)
	t.Cleanup(closeFirst)
	s.open(t, first, "/runs")
	if got := <-s.resumes; got != "" {
		t.Fatalf("the first tab resumed after %q, want the end of the log", got)
	}
	second := s.tab(t)
	s.open(t, second, "/runs")
	n := s.quiet(t)
	s.live <- flowRunFrame(7, "01936f0e-7b2a-7c3d-8e4f-5a6b7c8d9e0f", "FlowRunCreated")
	s.waitLists(t, n+2, "both tabs to read the runs again")
	closeFirst() // the second tab takes the stream over
	select {
	case got := <-s.resumes:
		if got != "7-7" {
			t.Fatalf("the tab that took over resumed after %q, want 7-7, the last event the first tab read", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no tab took the live stream over")
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
