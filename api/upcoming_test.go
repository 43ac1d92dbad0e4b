package api_test

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/projections"
	"github.com/ordoflow/ordo/projections/projtest"
)

// TestAPIRunsListUpcoming checks that GET /runs lists by default the runs
// that are due (started, ended or waiting), newest first, that
// upcoming=true lists only the runs scheduled for later, soonest first, that include lists both, and that
// keyset paging walks each list whole.
func TestAPIRunsListUpcoming(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := time.Now().UTC()
	at := func(d time.Duration) time.Time { return now.Add(d) }
	create := func(name string, scheduledAt time.Time) *projtest.Run {
		return b.log.CreateRun(projtest.RunSpec{Name: name, DeploymentName: "ml", ScheduledAt: scheduledAt})
	}
	create("past-completed", at(-3*time.Hour)).Complete()
	create("past-failed", at(-2*time.Hour)).Flow(domain.FlowRunPending{}, domain.FlowRunStarted{}, domain.FlowRunFailed{Message: "x"})
	create("due-scheduled", at(-time.Minute)) // due, waiting for a worker: not upcoming
	create("next-3", at(3*time.Hour))
	create("next-1", at(time.Hour))
	create("next-2", at(2*time.Hour))
	// cancelled before its time: still upcoming, shown CANCELLED, until then
	create("cancelled-ahead", at(4*time.Hour)).Flow(domain.FlowRunCancelled{})
	b.sync(t)

	list := func(query string, limit int) []string {
		t.Helper()
		var names []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 10 {
				t.Fatalf("%s: paging does not end", query)
			}
			path := "/api/v1/runs?limit=" + fmt.Sprint(limit) + "&" + query
			if cursor != "" {
				path += "&cursor=" + url.QueryEscape(cursor)
			}
			r := b.do(t, "GET", path, nil)
			if r.status != 200 {
				t.Fatalf("%s: %d %s", path, r.status, r.body)
			}
			var p projections.Page[projections.FlowRun]
			r.decode(t, &p)
			for _, run := range p.Items {
				names = append(names, run.Name)
			}
			if p.NextCursor == nil {
				return names
			}
			cursor = *p.NextCursor
		}
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{"due-scheduled", "past-failed", "past-completed"}},
		{"upcoming=false", []string{"due-scheduled", "past-failed", "past-completed"}},
		{"upcoming=true", []string{"next-1", "next-2", "next-3", "cancelled-ahead"}},
		{"upcoming=TRUE&since=" + url.QueryEscape(at(90*time.Minute).Format(time.RFC3339)), []string{"next-2", "next-3", "cancelled-ahead"}},
		{"upcoming=include", []string{"cancelled-ahead", "next-3", "next-2", "next-1", "due-scheduled", "past-failed", "past-completed"}},
		{"state=SCHEDULED", []string{"due-scheduled"}},
		{"state=SCHEDULED&upcoming=true", []string{"next-1", "next-2", "next-3"}},
		{"state=COMPLETED,CANCELLED", []string{"past-completed"}},
		{"state=CANCELLED&upcoming=true", []string{"cancelled-ahead"}},
		{"state=COMPLETED&upcoming=true", nil},
	}
	for _, tt := range tests {
		for _, limit := range []int{1, 2, 50} {
			if got := list(tt.query, limit); !slices.Equal(got, tt.want) {
				t.Errorf("%s, pages of %d: got %v, want %v", tt.query, limit, got, tt.want)
			}
		}
	}

	r := b.do(t, "GET", "/api/v1/runs?upcoming=soon", nil)
	if r.status != 400 || !strings.Contains(string(r.body), `upcoming`) || !strings.Contains(string(r.body), `soon`) {
		t.Errorf("upcoming=soon: %d %s, want 400 naming the parameter and the value", r.status, r.body)
	}
}
