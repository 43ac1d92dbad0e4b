package chaos

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// TestChaosServerKilled SIGKILLs the one server seven times, each time at
// the moment one of its transactions is open: three times while its
// scheduler creates runs of a 1 s schedule (the first time the first few
// runs it creates ahead for a new deployment), four times while its
// projector applies a batch of events to the read models (during bursts of
// task runs, and while it catches up on what the workers recorded while it
// was dead). A new server starts on the same address after each kill. Afterwards the
// read models equal a fresh replay, the schedule has exactly one run per
// second with none missing across the kills, and every run completed
// exactly once.
func TestChaosServerKilled(t *testing.T) {
	t.Parallel()
	c := newCluster(t, pgtest.URL(t))
	servers := 1
	srv := c.startServer("server-1", "")
	addr := srv.addr
	const queue = "chaos-srv"
	c.startWorker("w1", 10, queue)
	c.startWorker("w2", 10, queue)

	var burstTasks []domain.TaskSpec
	for i := range 50 {
		burstTasks = append(burstTasks, c.ledgerTask(fmt.Sprintf("t%02d", i), queue, 0.05, 0))
	}
	burst := c.deploy(srv.url(), domain.DeploymentSpec{Name: "srv-burst", WorkQueue: queue, Flow: domain.FlowSpec{Name: "burst", Tasks: burstTasks}})
	var runs []uuid.UUID

	kill := func(what, table string) {
		t.Helper()
		var scheduled int64
		victim := srv.name
		at, seen := c.killWhen(srv.proc, 20*time.Second, serverInTx, table)
		ctx := context.Background()
		if err := c.db.QueryRow(ctx, `SELECT count(*) FROM scheduled_runs`).Scan(&scheduled); err != nil {
			t.Fatal(err)
		}
		lag, err := c.projectionLag(ctx)
		if err != nil {
			t.Fatal(err)
		}
		how := "right after seeing a transaction of it open on " + table
		if !seen {
			how = "after 20 s without seeing a transaction of it open on " + table
		}
		servers++
		srv = c.startServer(fmt.Sprintf("server-%d", servers), addr)
		t.Logf("SIGKILL %s at %s %s (%s): then %d scheduled runs, read models %d events behind the log; %s started on the same address",
			victim, at.Format("15:04:05.000"), how, what, scheduled, lag, srv.name)
	}

	tickSpec := domain.DeploymentSpec{
		Name: "srv-tick", WorkQueue: queue, CatchUp: domain.CatchUpAll,
		Schedule: &domain.Schedule{IntervalSeconds: 1},
		Flow: domain.FlowSpec{Name: "tick", Tasks: []domain.TaskSpec{
			c.ledgerTask("first", queue, 0.05, 0), c.ledgerTask("second", queue, 0.05, 0, "first"),
		}},
	}
	tick := c.deploy(srv.url(), tickSpec)
	deployed := time.Now()
	kill("scheduling the runs ahead of a new 1 s schedule", "deployment_schedules")

	for range 2 {
		runs = append(runs, c.startRuns(srv.url(), burst, 6)...)
		kill("projecting 6 runs of 50 tasks", "projection_checkpoints")
		kill("projecting what was recorded while the server was dead", "projection_checkpoints")
		time.Sleep(2 * time.Second)
		kill("a scheduler tick", "deployment_schedules")
	}
	runs = append(runs, c.startRuns(srv.url(), burst, 2)...)
	windowEnd := time.Now().Add(5 * time.Second)
	c.waitEnded(runs, quietBound)
	time.Sleep(time.Until(windowEnd))

	l := c.readLog()
	tickRuns := c.checkTicks(l, tick, time.Second, deployed.Add(2*time.Second), windowEnd)
	c.waitEnded(tickRuns, quietBound)
	l = c.readLog()
	c.checkExactlyOnce(l, append(runs, tickRuns...))
	c.verifyReplay()
}
