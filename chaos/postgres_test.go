package chaos

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/internal/localpg"
)

// privatePostgres is a PostgreSQL server of the test's own, which it may
// stop and start: never the server other tests share.
type privatePostgres struct {
	t    *testing.T
	opts localpg.Options
	srv  *localpg.Server
}

func startPrivatePostgres(t *testing.T) *privatePostgres {
	t.Helper()
	dir, err := os.MkdirTemp("", "ordo-chaos-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the server may run as the postgres user
		t.Fatal(err)
	}
	p := &privatePostgres{t: t, opts: localpg.Options{DataDir: filepath.Join(dir, "data"), Fast: true}}
	if p.srv, err = localpg.Start(t.Context(), p.opts); err != nil {
		t.Fatalf("start a private PostgreSQL server (scripts/install-deps installs its binaries): %v", err)
	}
	p.opts.Port = p.srv.Port() // the processes reconnect to the same address
	t.Cleanup(func() { _ = p.srv.Stop(context.Background()) })
	return p
}

// restart stops the server (fast mode: sessions are cut, open transactions
// rolled back), keeps it down for down, starts it again and returns how
// long it did not answer.
func (p *privatePostgres) restart(down time.Duration) time.Duration {
	p.t.Helper()
	began := time.Now()
	if err := p.srv.Stop(context.Background()); err != nil {
		p.t.Fatal(err)
	}
	time.Sleep(down)
	srv, err := localpg.Start(context.Background(), p.opts)
	if err != nil {
		p.t.Fatal(err)
	}
	p.srv = srv
	return time.Since(began)
}

// TestChaosPostgresRestarts restarts PostgreSQL twice while 800 task runs
// run on two workers and a 1 s schedule creates runs, without touching
// the ordo processes: they reconnect by themselves. Afterwards every
// process still runs, both workers heartbeat and took work after the last
// restart, every run completed exactly once although the tasks have no
// retries, the scheduler created one run per second across the outages,
// the read models caught up and equal a fresh replay, and the log is legal.
func TestChaosPostgresRestarts(t *testing.T) {
	t.Parallel()
	pg := startPrivatePostgres(t)
	c := newCluster(t, pg.srv.URL())
	srv := c.startServer("server", "")
	const queue = "chaos-pg"
	workers := []*proc{c.startWorker("w1", 10, queue), c.startWorker("w2", 10, queue)}

	flow := c.chains(queue, 5, 10, 0.3, 0)
	batch := c.deploy(srv.url(), domain.DeploymentSpec{Name: "pg-batch", WorkQueue: queue, Flow: flow})
	tick := c.deploy(srv.url(), domain.DeploymentSpec{
		Name: "pg-tick", WorkQueue: queue, CatchUp: domain.CatchUpAll,
		Schedule: &domain.Schedule{IntervalSeconds: 1},
		Flow:     domain.FlowSpec{Name: "tick", Tasks: []domain.TaskSpec{c.ledgerTask("tick", queue, 0.1, 0)}},
	})
	deployed := time.Now()
	runs := c.startRuns(srv.url(), batch, 16)
	total := 16 * len(flow.Tasks)
	t.Logf("private PostgreSQL on port %d; started %d runs of %d tasks (%d task runs, no retries) and a 1 s schedule on queue %s; workers w1, w2",
		pg.opts.Port, len(runs), len(flow.Tasks), total, queue)

	var restartedAt time.Time
	for i, at := range []int{15, 50} {
		completed := c.waitCompleted(batch, total*at/100)
		took := pg.restart(2 * time.Second)
		restartedAt = time.Now()
		t.Logf("restart %d: PostgreSQL stopped with %d/%d task runs completed, down for %.1f s", i+1, completed, total, took.Seconds())
	}
	c.waitEnded(runs, quietBound)
	windowEnd := restartedAt.Add(10 * time.Second)
	time.Sleep(time.Until(windowEnd))

	for _, p := range append([]*proc{srv.proc}, workers...) {
		if !p.alive() {
			t.Fatalf("%s exited: it did not survive the restarts", p.name)
		}
	}
	t.Log("server, w1 and w2 still run: none was restarted. What they logged meanwhile:")
	for _, p := range append([]*proc{srv.proc}, workers...) {
		t.Logf("  %s: %s", p.name, p.complaints())
	}
	for _, w := range workers {
		var (
			beat   time.Time
			deadAt *time.Time
		)
		if err := c.db.QueryRow(context.Background(), `SELECT last_heartbeat_at, dead_at FROM workers WHERE name = $1`, w.name).Scan(&beat, &deadAt); err != nil {
			t.Fatal(err)
		}
		if !beat.After(restartedAt) || deadAt != nil {
			t.Errorf("%s: last heartbeat %s (last restart %s), dead_at %v: it did not reconnect", w.name, beat.Format(time.RFC3339Nano), restartedAt.Format(time.RFC3339Nano), deadAt)
		}
	}

	l := c.readLog()
	tickRuns := c.checkTicks(l, tick, time.Second, deployed.Add(2*time.Second), windowEnd)
	c.waitEnded(tickRuns, quietBound)
	l = c.readLog()
	c.checkExactlyOnce(l, append(runs, tickRuns...))
	after := map[string]int{}
	for _, e := range l.events {
		if s, ok := e.Event.(domain.TaskRunStarted); ok && e.RecordedAt.After(restartedAt) {
			after[s.Worker]++
		}
	}
	for _, w := range workers {
		if after[w.name] == 0 {
			t.Errorf("%s started no attempt after the last restart", w.name)
		}
	}
	t.Logf("attempts started after the last restart: w1 %d, w2 %d; both heartbeat since", after["w1"], after["w2"])

	// The read models caught up: the API shows every run completed.
	all := append(runs, tickRuns...)
	c.progressing("the API shows every run COMPLETED", quietBound, func() (int, bool) {
		completed := 0
		for _, id := range all {
			var run struct {
				State struct {
					Type string `json:"type"`
				} `json:"state"`
			}
			c.call(srv.url(), http.MethodGet, "/runs/"+id.String(), nil, &run)
			if run.State.Type == "COMPLETED" {
				completed++
			}
		}
		return completed, completed == len(all)
	})
	resp, err := http.Get(srv.url() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz answered %s after the restarts", resp.Status)
	}
	t.Logf("the API shows all %d runs COMPLETED and /readyz is ready: the projector caught up", len(runs)+len(tickRuns))
	c.verifyReplay()
}

// waitCompleted waits until at least n task runs of the deployment's runs
// completed and returns how many did; errors while PostgreSQL restarts are
// retried.
func (c *cluster) waitCompleted(deployment uuid.UUID, n int) int {
	c.t.Helper()
	var completed int
	c.progressing(fmt.Sprintf("%d task runs complete", n), quietBound, func() (int, bool) {
		err := c.db.QueryRow(context.Background(), `
SELECT count(*) FROM events f CROSS JOIN LATERAL jsonb_each_text(f.data->'task_run_ids') tr
JOIN events e ON e.stream_id = tr.value::uuid AND e.type = 'TaskRunCompleted'
WHERE f.type = 'FlowRunCreated' AND f.data->>'deployment_id' = $1::text`, deployment).Scan(&completed)
		if err != nil {
			return -1, false
		}
		return completed, completed >= n
	})
	return completed
}
