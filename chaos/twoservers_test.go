package chaos

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// TestChaosTwoServers runs two servers and three workers at once on two
// 1 s schedules for a minute (ORDO_CHAOS_SOAK, a Go duration, sets another
// length), one on a work queue limited to 2 task runs at a time whose runs
// have 3 parallel 0.1 s tasks and a join, one on a queue without a limit. Afterwards: each
// schedule has exactly one run per second, none missing; every run of the
// window completed exactly once; no task run was executed twice, let alone
// at the same time (by the tasks' own ledger); the limited queue never ran
// more than 2 task runs at once; the read models equal a fresh replay.
func TestChaosTwoServers(t *testing.T) {
	t.Parallel()
	length := time.Minute
	if v := os.Getenv("ORDO_CHAOS_SOAK"); v != "" {
		var err error
		if length, err = time.ParseDuration(v); err != nil {
			t.Fatalf("ORDO_CHAOS_SOAK: %v", err)
		}
	}
	c := newCluster(t, pgtest.URL(t))
	servers := []*server{c.startServer("server-a", ""), c.startServer("server-b", "")}
	const (
		limited = "chaos-limited"
		open    = "chaos-open"
		limit   = 2
	)
	c.call(servers[0].url(), http.MethodPost, "/work-queues", map[string]any{"name": limited, "concurrency_limit": limit}, nil)
	var workers []*proc
	for i := range 3 {
		workers = append(workers, c.startWorker(fmt.Sprintf("w%d", i+1), 10, limited, open))
	}
	parallel := func(queue string, n int, nap float64) []domain.TaskSpec {
		var tasks []domain.TaskSpec
		var names []string
		for i := range n {
			name := fmt.Sprintf("p%d", i)
			tasks = append(tasks, c.ledgerTask(name, queue, nap, 0))
			names = append(names, name)
		}
		return append(tasks, c.ledgerTask("join", queue, 0.05, 0, names...))
	}
	every := &domain.Schedule{IntervalSeconds: 1}
	deployments := map[string]uuid.UUID{
		limited: c.deploy(servers[0].url(), domain.DeploymentSpec{Name: "soak-limited", WorkQueue: limited, CatchUp: domain.CatchUpAll, Schedule: every,
			Flow: domain.FlowSpec{Name: "limited", Tasks: parallel(limited, 3, 0.1)}}),
		open: c.deploy(servers[1].url(), domain.DeploymentSpec{Name: "soak-open", WorkQueue: open, CatchUp: domain.CatchUpAll, Schedule: every,
			Flow: domain.FlowSpec{Name: "open", Tasks: parallel(open, 4, 0.3)}}),
	}
	deployed := time.Now()
	t.Logf("servers a and b, workers w1-w3 (concurrency 10 on both queues); queue %s limited to %d; two 1 s schedules: runs of 3 parallel 0.1 s tasks on %s, of 4 parallel 0.3 s tasks on %s; for %v",
		limited, limit, limited, open, length)

	time.Sleep(length)
	windowEnd := deployed.Add(length)
	for _, p := range append([]*proc{servers[0].proc, servers[1].proc}, workers...) {
		if !p.alive() {
			t.Fatalf("%s exited during the soak", p.name)
		}
	}

	// The schedules' runs are created ahead of time; on a loaded machine
	// the scheduler may still be filling in the window's last seconds:
	// wait for it while it makes progress, then check the whole window.
	for _, queue := range []string{limited, open} {
		c.progressing("the runs of "+queue+"'s schedule reach the window's end", quietBound, func() (int, bool) {
			var (
				n    int
				last *time.Time
			)
			if err := c.db.QueryRow(context.Background(), `SELECT count(*), max(scheduled_at) FROM scheduled_runs WHERE deployment_id = $1`,
				deployments[queue]).Scan(&n, &last); err != nil {
				return -1, false
			}
			return n, last != nil && !last.Before(windowEnd)
		})
	}
	l := c.readLog()
	var runs []uuid.UUID
	for _, queue := range []string{limited, open} {
		runs = append(runs, c.checkTicks(l, deployments[queue], time.Second, deployed.Add(2*time.Second), windowEnd)...)
	}
	c.waitEnded(runs, quietBound)
	l = c.readLog()
	c.checkExactlyOnce(l, runs)
	ledger := c.readLedger()

	// Executions by the tasks' own account: one per task run, so none at
	// the same time as another of the same task run.
	byTaskRun := map[uuid.UUID][]execution{}
	for _, e := range ledger {
		byTaskRun[e.taskRun] = append(byTaskRun[e.taskRun], e)
	}
	inWindow := 0
	for _, id := range runs {
		for _, tr := range l.flowRuns[id].TaskRunIDs {
			inWindow++
			if execs := byTaskRun[tr]; len(execs) != 1 {
				t.Errorf("task run %s was executed %d times (overlapping: %t)", tr, len(execs), overlap(execs) > 1)
			}
		}
	}
	t.Logf("%d task runs of the window each executed exactly once (by the tasks' ledger of %d executions)", inWindow, len(ledger))

	// Queue concurrency: the most task processes of each queue that ran at
	// the same time.
	most := map[string]int{}
	for _, queue := range []string{limited, open} {
		most[queue] = overlap(slices.DeleteFunc(slices.Clone(ledger), func(e execution) bool { return e.label != queue }))
	}
	t.Logf("most task runs running at once: %d on %s (no limit), %d on %s (limit %d)", most[open], open, most[limited], limited, limit)
	switch {
	case most[limited] > limit:
		_, at := busiest(slices.DeleteFunc(slices.Clone(ledger), func(e execution) bool { return e.label != limited }))
		var lines []string
		for _, e := range at {
			line := fmt.Sprintf("task run %s attempt %d ran %s to %s", e.taskRun, e.attempt, e.start.Format("15:04:05.000000"), e.end.Format("15:04:05.000000"))
			for _, ev := range l.streams[e.taskRun] {
				line += fmt.Sprintf("; %s by %s at %s", ev.Type, ev.Metadata.Actor, ev.RecordedAt.Format("15:04:05.000000"))
			}
			lines = append(lines, line)
		}
		t.Errorf("queue %s ran %d task runs at once, over its limit of %d:\n  %s", limited, most[limited], limit, strings.Join(lines, "\n  "))
	default:
		t.Logf("queue %s never ran more than its limit of %d task runs at once", limited, limit)
	}
	c.logHandOff(l, slices.DeleteFunc(slices.Clone(ledger), func(e execution) bool { return e.label != limited }), limit)
	c.verifyReplay()
}

// logHandOff logs how quickly a freed slot of a limited queue was taken by
// the next task process: the time from an execution's end that left a slot
// free to the next start, and its parts from the log: the outcome's record,
// the next attempt's start record, and that attempt's process starting. It
// tells a slow hand-off from a queue that simply had more work than slots.
func (c *cluster) logHandOff(l *runLog, execs []execution, limit int) {
	c.t.Helper()
	type edge struct {
		at    time.Time
		start bool
		i     int
	}
	var edges []edge
	var busy time.Duration
	for i, e := range execs {
		edges = append(edges, edge{e.start, true, i}, edge{e.end, false, i})
		busy += e.end.Sub(e.start)
	}
	if len(edges) == 0 {
		return
	}
	slices.SortFunc(edges, func(a, b edge) int { return a.at.Compare(b.at) })
	recorded := func(e execution, typ string) (time.Time, bool) {
		for _, ev := range l.streams[e.taskRun] {
			if ev.Type == typ {
				return ev.RecordedAt, true
			}
		}
		return time.Time{}, false
	}
	var gaps, outcome, start, spawn []time.Duration
	var freed []int // executions whose end left a slot free, oldest first
	running := 0
	for _, e := range edges {
		if !e.start {
			if running == limit {
				freed = append(freed, e.i)
			}
			running--
			continue
		}
		running++
		if len(freed) == 0 {
			continue
		}
		a, b := execs[freed[0]], execs[e.i]
		freed = freed[1:]
		gaps = append(gaps, b.start.Sub(a.end))
		done, ok1 := recorded(a, "TaskRunCompleted")
		began, ok2 := recorded(b, "TaskRunStarted")
		if ok1 && ok2 {
			outcome, start, spawn = append(outcome, done.Sub(a.end)), append(start, began.Sub(done)), append(spawn, b.start.Sub(began))
		}
	}
	if len(gaps) == 0 {
		return
	}
	p50 := func(ds []time.Duration) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		ds = slices.Clone(ds)
		slices.Sort(ds)
		return ds[len(ds)/2].Round(time.Millisecond)
	}
	slices.Sort(gaps)
	span := edges[len(edges)-1].at.Sub(edges[0].at)
	c.t.Logf("limited queue: %d task processes busy %.0f%% of its %d slots over %v; a freed slot was taken again after p50 %v, p90 %v, max %v; medians of its parts: outcome recorded %v after the process ended, next start recorded %v later, its process started %v after that",
		len(execs), 100*busy.Seconds()/(float64(limit)*span.Seconds()), limit, span.Round(time.Second),
		gaps[len(gaps)/2].Round(time.Millisecond), gaps[len(gaps)*9/10].Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond),
		p50(outcome), p50(start), p50(spawn))
}
