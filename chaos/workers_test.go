package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// crashDetectionBound is how soon after a worker is killed its running
// attempts must be recorded as crashed (the reaper's defaults: a worker is
// dead 15 s after its last heartbeat, which is at most 5 s old, and the
// reaper looks every 5 s).
const crashDetectionBound = 30 * time.Second

// TestChaosWorkersKilled runs 2,000 task runs (20 runs of 10 chains of 10
// tasks) on three workers and SIGKILLs a random worker every 2 to 4 s,
// starting a new one in its place, until 90% of the task runs completed.
// Afterwards every run completed, every attempt started once and ended
// once (no completion lost or recorded twice), every completion recorded is
// one a task process made, every attempt a killed worker was running was
// recorded as crashed within 30 s of the kill and no attempt of a live
// worker was, and the log replays clean.
func TestChaosWorkersKilled(t *testing.T) {
	t.Parallel()
	c := newCluster(t, pgtest.URL(t))
	srv := c.startServer("server", "")
	const (
		queue    = "chaos-kill"
		runCount = 20
		maxKills = 12
	)
	started := 0
	// A worker is killed only once it has registered: one killed before
	// that ran nothing and leaves no row whose death the reaper records,
	// which a loaded machine would otherwise make likely.
	startWorker := func() *proc {
		started++
		name := fmt.Sprintf("w%d", started)
		p := c.startWorker(name, 10, queue)
		c.eventually(quietBound, name+" registers", func() bool {
			var n int
			err := c.db.QueryRow(context.Background(), `SELECT count(*) FROM workers WHERE name = $1`, name).Scan(&n)
			return err == nil && n > 0
		})
		return p
	}
	workers := []*proc{startWorker(), startWorker(), startWorker()}

	flow := c.chains(queue, 10, 10, 0.5, 10)
	d := c.deploy(srv.url(), domain.DeploymentSpec{Name: "kill-workers", WorkQueue: queue, Flow: flow})
	runs := c.startRuns(srv.url(), d, runCount)
	total := runCount * len(flow.Tasks)
	began := time.Now()
	t.Logf("started %d runs of %d tasks (%d task runs, up to 10 retries each) on queue %s; workers w1, w2, w3 with concurrency 10", runCount, len(flow.Tasks), total, queue)

	type kill struct {
		worker string
		at     time.Time
	}
	var kills []kill
	for len(kills) < maxKills {
		time.Sleep(2*time.Second + rand.N(2*time.Second))
		var completed int
		if err := c.db.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'TaskRunCompleted'`).Scan(&completed); err != nil {
			t.Fatal(err)
		}
		if completed >= total*9/10 {
			break
		}
		i := rand.IntN(len(workers))
		victim := workers[i]
		at := victim.kill(t)
		kills = append(kills, kill{victim.name, at})
		workers[i] = startWorker()
		t.Logf("kill %d at +%v: SIGKILL %s with %d/%d task runs completed; %s started in its place",
			len(kills), at.Sub(began).Round(100*time.Millisecond), victim.name, completed, total, workers[i].name)
	}
	if len(kills) < 3 {
		t.Fatalf("the workload was 90%% done after %d kills: make it longer so that workers die in the middle of it", len(kills))
	}
	c.waitEnded(runs, quietBound)
	t.Logf("all %d runs ended %v after they started, after %d kills", runCount, time.Since(began).Round(time.Second), len(kills))

	l := c.readLog()
	c.checkExactlyOnce(l, runs)

	// Crash detection: the attempts each killed worker was running, and
	// when they were recorded crashed.
	killed := map[string]time.Time{}
	for _, k := range kills {
		killed[k.worker] = k.at
	}
	type lost struct {
		count int
		first time.Duration
		last  time.Duration
	}
	lostBy := map[string]*lost{}
	falseCrashes := 0
	for _, events := range l.streams {
		worker := map[int]string{} // attempt -> worker that started it
		for _, e := range events {
			if s, ok := e.Event.(domain.TaskRunStarted); ok {
				worker[s.Attempt] = s.Worker
				continue
			}
			attempt, crashed, ok := attemptOutcome(e.Event)
			if !ok {
				continue
			}
			w := worker[attempt]
			killedAt, wasKilled := killed[w]
			switch {
			case wasKilled && e.Metadata.Actor != "worker:"+w:
				if !crashed || e.Metadata.Actor != "reaper" {
					t.Errorf("attempt %d of task run %s on killed worker %s ended by %s (%s), not recorded crashed by the reaper", attempt, e.StreamID, w, e.Metadata.Actor, e.Type)
				}
				took := e.RecordedAt.Sub(killedAt)
				lb := lostBy[w]
				if lb == nil {
					lb = &lost{first: took}
					lostBy[w] = lb
				}
				lb.count++
				lb.first, lb.last = min(lb.first, took), max(lb.last, took)
			case !wasKilled && crashed:
				falseCrashes++
			}
		}
	}
	// A worker killed near the end may have been running nothing that the
	// runs waited for: give the reaper its bound to declare it dead.
	names := make([]string, len(kills))
	for i, k := range kills {
		names[i] = k.worker
	}
	for time.Since(kills[len(kills)-1].at) < crashDetectionBound+5*time.Second {
		var dead int
		if err := c.db.QueryRow(context.Background(), `SELECT count(*) FROM workers WHERE name = ANY($1) AND dead_at IS NOT NULL`, names).Scan(&dead); err != nil {
			t.Fatal(err)
		}
		if dead == len(kills) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var worst time.Duration
	for i, k := range kills {
		var deadAt *time.Time
		if err := c.db.QueryRow(context.Background(), `SELECT dead_at FROM workers WHERE name = $1`, k.worker).Scan(&deadAt); err != nil {
			t.Fatalf("worker %s: %v", k.worker, err)
		}
		if deadAt == nil {
			t.Errorf("kill %d: %s was never declared dead", i+1, k.worker)
			continue
		}
		dead := deadAt.Sub(k.at)
		took := dead
		if lb := lostBy[k.worker]; lb != nil {
			took = max(took, lb.last)
			t.Logf("kill %d: %s declared dead %.1f s after the kill; the %d attempts it was running recorded crashed %.1f-%.1f s after the kill",
				i+1, k.worker, dead.Seconds(), lb.count, lb.first.Seconds(), lb.last.Seconds())
		} else {
			t.Logf("kill %d: %s declared dead %.1f s after the kill; it was running no attempt", i+1, k.worker, dead.Seconds())
		}
		worst = max(worst, took)
		if took > crashDetectionBound {
			t.Errorf("kill %d: %s's crash detected %v after the kill, want within %v", i+1, k.worker, took.Round(100*time.Millisecond), crashDetectionBound)
		}
	}
	if falseCrashes > 0 {
		t.Errorf("%d attempts of workers that were never killed were recorded as crashed", falseCrashes)
	}
	lostTotal := 0
	for _, lb := range lostBy {
		lostTotal += lb.count
	}
	t.Logf("crash detection: %d attempts lost by %d killed workers, every one recorded crashed by the reaper, the slowest %.1f s after its kill (bound %v); no attempt of a live worker recorded crashed",
		lostTotal, len(kills), worst.Seconds(), crashDetectionBound)
	if lostTotal == 0 {
		t.Error("no killed worker was running an attempt: the kills did not hit the workload")
	}
	if got := slices.IndexFunc(workers, func(p *proc) bool { return !p.alive() }); got >= 0 {
		t.Errorf("worker %s exited by itself", workers[got].name)
	}
	c.verifyReplay()
}
