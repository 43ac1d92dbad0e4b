package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ordoflow/ordo/client"
)

// TestEventsReadsOnAfterAShortPage: a page of the global log can come back
// short in the middle of the log (a transaction of another database that
// ends while the server looks holds it back), so `ordo events` without
// --follow reads on from the last cursor and stops at an empty page. The
// real server cuts a page short only in that race, which a test cannot
// bring about, so a stand-in for the API answers here: two short pages,
// then an empty one.
func TestEventsReadsOnAfterAShortPage(t *testing.T) {
	t.Parallel()
	pages := map[string][]int{"": {1, 2}, "c2": {3}, "c3": nil}
	var mu sync.Mutex
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		after := r.URL.Query().Get("after")
		mu.Lock()
		asked = append(asked, after)
		mu.Unlock()
		positions, ok := pages[after]
		if r.URL.Path != "/api/v1/events" || !ok {
			t.Errorf("unexpected request %s", r.URL)
			http.Error(w, "unexpected", http.StatusBadRequest)
			return
		}
		page := struct {
			Items      []client.Event `json:"items"`
			NextCursor *string        `json:"next_cursor"`
		}{Items: []client.Event{}}
		for _, p := range positions {
			page.Items = append(page.Items, client.Event{
				Position: p, Cursor: "c" + string(rune('0'+p)), Type: "FlowRunCreated", StreamType: "flow_run",
				StreamID: "0190b6a0-0000-7000-8000-000000000001", Version: p, Data: json.RawMessage(`{}`),
				RecordedAt: time.Date(2026, 12, 7, 10, 0, p, 0, time.UTC),
			})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(page)
	}))
	t.Cleanup(srv.Close)

	out, errOut, code := runOrdo(t, "events", "--json", "--api-url", srv.URL)
	if code != 0 {
		t.Fatalf("ordo events: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[2], `"position":3`) {
		t.Fatalf("ordo events printed %d events, want the 3 of both short pages:\n%s", len(lines), out)
	}
	if strings.Join(asked, ",") != ",c2,c3" {
		t.Errorf("pages asked after %q, want after \"\", c2, c3 (stopping at the empty page)", asked)
	}
}
