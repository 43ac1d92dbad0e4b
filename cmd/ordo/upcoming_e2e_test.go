package main

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestEndToEndRunsLsUpcoming: the runs a schedule creates ahead are listed
// by `runs ls --upcoming`, soonest first, and not by `runs ls`, which lists
// the run started now; an upcoming run can still be named to `runs show`.
func TestEndToEndRunsLsUpcoming(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	// an hourly schedule: its first run is due now, the next ones are upcoming
	scheduled := strings.Replace(e2eDeployment, "parameters: {fail: \"no\"}", "parameters: {fail: \"no\"}\nschedule: {interval_seconds: 3600}", 1)
	c.ordo("deploy", "-f", c.writeFile("deployment.yaml", scheduled))
	started := runIDIn(t, c.ordo("run", "e2e-pipeline"))

	row := regexp.MustCompile(`(?m)^([0-9a-f]{8}-[0-9a-f-]{27})\s+(\S+)\s+e2e-pipeline\s+e2e\s+SCHEDULED\s+(\S+ \S+)`)
	var upcoming [][]string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		upcoming = row.FindAllStringSubmatch(c.ordo("runs", "ls", "--upcoming"), -1)
		if len(upcoming) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the schedule created no runs ahead: %v", upcoming)
		}
	}
	for i, r := range upcoming {
		at, err := time.ParseInLocation(time.DateTime, r[3], time.Local)
		if err != nil {
			t.Fatal(err)
		}
		if !at.After(time.Now()) {
			t.Errorf("runs ls --upcoming lists %s, scheduled at %s, which is not ahead", r[1], r[3])
		}
		if i > 0 && r[3] < upcoming[i-1][3] {
			t.Errorf("runs ls --upcoming is not soonest first: %s after %s", r[3], upcoming[i-1][3])
		}
		if r[1] == started {
			t.Errorf("runs ls --upcoming lists the run started now")
		}
	}
	ls := c.ordo("runs", "ls")
	if !strings.Contains(ls, started) {
		t.Errorf("runs ls does not list the run started now (%s):\n%s", started, ls)
	}
	for _, r := range upcoming {
		if strings.Contains(ls, r[1]) {
			t.Errorf("runs ls lists the upcoming run %s:\n%s", r[1], ls)
		}
	}
	if show := c.ordo("runs", "show", upcoming[0][2]); !strings.Contains(show, upcoming[0][1]) {
		t.Errorf("runs show %s (an upcoming run, by name):\n%s", upcoming[0][2], show)
	}
}
