package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/internal/patroni"
)

// recoveryBound is the longest the issue allows from the promotion of the
// standby to the first task completed on it.
const recoveryBound = 15 * time.Second

// TestChaosFailover runs two servers and three workers on a Patroni
// cluster of two PostgreSQL nodes, the processes given the multi-host URL
// of both, while a client writes through the API (runs created, runs
// cancelled, deployments saved), flows of command tasks with retries run,
// and a 1 s schedule creates runs. With synchronous replication it
// SIGKILLs the primary's postmaster (Patroni promotes the standby), waits
// for the old primary to rejoin, and switches over back to it with
// patronictl. Afterwards: every write answered 2xx is in the log, every run
// completed exactly once (by the log and the tasks' own ledger), the
// schedule has one run per second with none missing or doubled, the log
// replays clean and legal, no process was restarted, and from each
// promotion to the first task completed on the new primary took at most
// 15 s. Then, on the same cluster, replication turned asynchronous, the
// primary is killed again: the test prints the acknowledged writes lost and
// shows the log still legal and every run in it ending.
func TestChaosFailover(t *testing.T) {
	t.Parallel()
	ha := startHA(t)
	c := newCluster(t, ha.URL("ordo"))
	t.Cleanup(func() { // before c.dir is removed: keep the processes' logs with the cluster's
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(c.dir, "*.log"))
			for _, l := range logs {
				if b, err := os.ReadFile(l); err == nil {
					_ = os.WriteFile(filepath.Join(ha.Dir(), "ordo-"+filepath.Base(l)), b, 0o644)
				}
			}
		}
	})
	servers := []*server{c.startServer("server-a", ""), c.startServer("server-b", "")}
	const queue = "chaos-ha"
	var workers []*proc
	for i := range 3 {
		workers = append(workers, c.startWorker(fmt.Sprintf("w%d", i+1), 5, queue))
	}
	procs := append([]*proc{servers[0].proc, servers[1].proc}, workers...)
	w := &apiWriter{c: c, servers: servers, queue: queue}
	w.batch = c.deploy(servers[0].url(), domain.DeploymentSpec{Name: "ha-batch", WorkQueue: queue, Flow: c.chains(queue, 2, 2, 0.1, 2)})
	w.slow = c.deploy(servers[1].url(), domain.DeploymentSpec{Name: "ha-slow", WorkQueue: queue,
		Flow: domain.FlowSpec{Name: "slow", Tasks: []domain.TaskSpec{c.ledgerTask("slow", queue, 5, 0)}}})
	tick := c.deploy(servers[0].url(), domain.DeploymentSpec{
		Name: "ha-tick", WorkQueue: queue, CatchUp: domain.CatchUpAll,
		Schedule: &domain.Schedule{IntervalSeconds: 1},
		Flow:     domain.FlowSpec{Name: "tick", Tasks: []domain.TaskSpec{c.ledgerTask("tick", queue, 0.1, 2)}},
	})
	deployed := time.Now()
	t.Logf("Patroni cluster %s and %s (synchronous_mode on); servers a and b, workers w1-w3 (concurrency 5) on the multi-host URL; a client creates runs of 2 chains of 2 tasks (2 retries), saves deployments and cancels runs through both servers; a 1 s schedule",
		ha.Nodes[0].Name, ha.Nodes[1].Name)

	t.Run("Synchronous", func(t *testing.T) {
		c.t = t
		w.start()
		c.waitCompletions(20)
		recovery := c.failOver(ha, "SIGKILL of the primary's postmaster", func() (*patroni.Node, time.Time) {
			killed, at, err := ha.KillPrimary(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return killed, at
		})
		rejoin(t, ha, true)
		recovery = max(recovery, c.failOver(ha, "patronictl switchover", func() (*patroni.Node, time.Time) {
			leader, err := ha.Leader(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			at := time.Now()
			if _, err := ha.Switchover(t.Context()); err != nil {
				t.Fatal(err)
			}
			return leader, at
		}))
		rejoin(t, ha, true)
		c.waitCompletions(20)
		writes := w.stop()
		windowEnd := time.Now()

		checkAlive(t, procs)
		l := c.readLog()
		report(t, "writes answered 2xx that are not in the log", writes.missing(l))
		t.Logf("every write answered 2xx is in the log: %s", writes)
		tickRuns := c.checkTicks(l, tick, time.Second, deployed.Add(2*time.Second), windowEnd)
		c.waitEnded(slices.Concat(writes.runs, writes.slowRuns, tickRuns), quietBound)
		l = c.readLog()
		c.checkExactlyOnce(l, append(slices.Clone(writes.runs), tickRuns...))
		for _, id := range writes.cancelled {
			if ends := terminalOf(l, id); len(ends) != 1 {
				t.Errorf("cancelled run %s: terminal events %v, want one", id, ends)
			}
		}
		c.verifyReplay()
		t.Logf("longest from a promotion to the first task completed on the new primary: %v (bound %v)", recovery.Round(10*time.Millisecond), recoveryBound)
		if recovery > recoveryBound {
			t.Errorf("a task completed on the new primary %v after its promotion, over %v", recovery, recoveryBound)
		}
	})
	c.t = t // the processes' clean-ups log to the test that started them
	if t.Failed() {
		return
	}

	t.Run("Asynchronous", func(t *testing.T) {
		c.t = t
		if err := ha.SetSynchronous(t.Context(), false); err != nil {
			t.Fatal(err)
		}
		rejoin(t, ha, false)
		w.reset()
		w.start()
		c.waitCompletions(20)
		var down *patroni.Node
		c.failOver(ha, "the primary's node lost (Patroni and postmaster SIGKILLed), replication asynchronous", func() (*patroni.Node, time.Time) {
			leader, err := ha.Leader(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			// On loopback the standby is never far behind: stall the
			// primary's WAL sender, as a slow network would, so that what
			// is committed in the last seconds reaches only the primary.
			if err := ha.StallReplication(t.Context()); err != nil {
				t.Fatal(err)
			}
			c.waitCompletions(10)
			lag := replicationLag(t, leader)
			// The whole node goes: were its Patroni left, it would restart
			// the old primary, which has what the standby lacks, rather
			// than promote the standby.
			var at time.Time
			down, at, err = ha.LosePrimary(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("  replication stalled while 10 tasks completed: the standby had not received %s of the primary's WAL when it was lost", lag)
			return down, at
		})
		if err := ha.StartNode(down); err != nil {
			t.Fatal(err)
		}
		rejoin(t, ha, false)
		c.waitCompletions(10)
		writes := w.stop()
		windowEnd := time.Now()

		checkAlive(t, procs)
		l := c.readLog()
		lost := writes.missing(l)
		t.Logf("asynchronous replication: %d of the writes answered 2xx were lost in the failover (%s)", len(lost), writes)
		for _, p := range lost {
			t.Logf("  lost: %s", p)
		}
		// Every run the log has, due by the end of the window, ends.
		var runs []uuid.UUID
		for id, fr := range l.flowRuns {
			if fr.ParentFlowRunID == nil && !fr.ScheduledAt.After(windowEnd) {
				runs = append(runs, id)
			}
		}
		c.verifyReplay()
		if stuck := c.notEnding(runs, quietBound); len(stuck) > 0 {
			t.Errorf("%d of the %d runs of the log due by the end never end", len(stuck), len(runs))
			for _, id := range stuck[:min(len(stuck), 5)] {
				t.Errorf("  run %s: %s", id, c.whyNotEnded(id))
			}
		} else {
			t.Logf("all %d runs of the log due by the end ended", len(runs))
		}
	})
	c.t = t
	for _, p := range procs {
		t.Logf("  %s: %s", p.name, p.complaints())
	}
}

// startHA starts a Patroni cluster for the test, with a database ordo.
func startHA(t *testing.T) *patroni.Cluster {
	t.Helper()
	ha := patroni.StartTest(t, patroni.Options{})
	conn, err := pgx.Connect(t.Context(), ha.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), `CREATE DATABASE ordo`); err != nil {
		t.Fatal(err)
	}
	return ha
}

// failOver moves the primary with move (which returns the node that led
// and when it began), then logs when Patroni promoted the other node and
// when the first task completed on it, and returns the time between those
// two.
func (c *cluster) failOver(ha *patroni.Cluster, what string, move func() (*patroni.Node, time.Time)) time.Duration {
	c.t.Helper()
	t := c.t
	old, began := move()
	var next *patroni.Node
	for _, n := range ha.Nodes {
		if n != old {
			next = n
		}
	}
	seen, err := ha.WaitPrimary(t.Context(), next, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Patroni's history has the time it promoted the node; the first time
	// the test saw it accept writes is a later bound of it.
	promoted := seen
	for range 100 {
		h, err := ha.History(t.Context())
		if err == nil && len(h) > 0 && h[len(h)-1].Node == next.Name && h[len(h)-1].At.After(began.Add(-time.Second)) {
			if h[len(h)-1].At.Before(promoted) {
				promoted = h[len(h)-1].At
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var first time.Time
	c.progressing("a task completes on the new primary", quietBound, func() (int, bool) {
		var at *time.Time
		var n int
		err := c.db.QueryRow(context.Background(), `
SELECT min(recorded_at), count(*) FROM events WHERE type = 'TaskRunCompleted' AND recorded_at >= $1`, promoted).Scan(&at, &n)
		if err != nil {
			return -1, false
		}
		if at != nil {
			first = *at
		}
		return n, at != nil
	})
	recovery := first.Sub(promoted)
	t.Logf("%s: %s led; %s promoted %v later (by Patroni's history), accepting writes %v after that; the first task completed on it %v after its promotion",
		what, old.Name, next.Name, promoted.Sub(began).Round(10*time.Millisecond), seen.Sub(promoted).Round(10*time.Millisecond), recovery.Round(10*time.Millisecond))
	return recovery
}

// rejoin waits until both nodes replicate again (the old primary rejoined
// as a standby) and logs how long that took.
func rejoin(t *testing.T, ha *patroni.Cluster, sync bool) {
	t.Helper()
	began := time.Now()
	if err := ha.WaitReplicating(t.Context(), sync); err != nil {
		t.Fatal(err)
	}
	kind := "asynchronous"
	if sync {
		kind = "synchronous"
	}
	t.Logf("  the other node streams as the %s standby (%v later)", kind, time.Since(began).Round(100*time.Millisecond))
}

// waitCompletions waits until n more tasks completed.
func (c *cluster) waitCompletions(n int) {
	c.t.Helper()
	count := func() int {
		var done int
		if err := c.db.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'TaskRunCompleted'`).Scan(&done); err != nil {
			return -1
		}
		return done
	}
	from := -1
	c.progressing(fmt.Sprintf("%d more tasks complete", n), quietBound, func() (int, bool) {
		done := count()
		if from < 0 {
			from = done
		}
		return done, from >= 0 && done >= from+n
	})
}

// replicationLag is how much WAL the standby of leader has not received.
func replicationLag(t *testing.T, leader *patroni.Node) string {
	conn, err := pgx.Connect(t.Context(), leader.URL("postgres"))
	if err != nil {
		return "?"
	}
	defer conn.Close(context.Background())
	var lag string
	if err := conn.QueryRow(t.Context(), `
SELECT coalesce(max(pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn))), '?') FROM pg_stat_replication`).Scan(&lag); err != nil {
		return "?"
	}
	return lag
}

func checkAlive(t *testing.T, procs []*proc) {
	t.Helper()
	for _, p := range procs {
		if !p.alive() {
			t.Fatalf("%s exited: it did not survive the failover", p.name)
		}
	}
	t.Log("both servers and the three workers still run: none was restarted")
}

func terminalOf(l *runLog, run uuid.UUID) []string {
	var ends []string
	for _, e := range l.streams[run] {
		if slices.Contains(terminalFlowRunEvents, e.Type) {
			ends = append(ends, e.Type)
		}
	}
	return ends
}

// apiWriter writes through the API of the servers in turn, as a client
// would during a failover, and remembers the writes answered 2xx: runs
// created, deployments saved, runs cancelled. Writes that fail are not
// retried; they are counted.
type apiWriter struct {
	c           *cluster
	servers     []*server
	queue       string
	batch, slow uuid.UUID

	mu      sync.Mutex
	acked   ackedWrites
	stopped chan struct{}
	done    chan struct{}
}

type ackedWrites struct {
	runs, slowRuns, deployments, cancelled []uuid.UUID
	failed                                 int
}

func (a ackedWrites) String() string {
	return fmt.Sprintf("%d runs created, %d deployments saved, %d runs cancelled; %d writes failed (not answered 2xx)",
		len(a.runs)+len(a.slowRuns), len(a.deployments), len(a.cancelled), a.failed)
}

// missing lists the acknowledged writes the log does not have.
func (a ackedWrites) missing(l *runLog) []string {
	var out []string
	for _, id := range slices.Concat(a.runs, a.slowRuns) {
		if _, ok := l.flowRuns[id]; !ok {
			out = append(out, "run "+id.String()+" created")
		}
	}
	for _, id := range a.deployments {
		if !slices.ContainsFunc(l.streams[id], func(e domain.Envelope) bool { return e.Type == "DeploymentCreated" }) {
			out = append(out, "deployment "+id.String()+" saved")
		}
	}
	for _, id := range a.cancelled {
		if !slices.ContainsFunc(l.streams[id], func(e domain.Envelope) bool {
			return e.Type == "FlowRunCancelling" || e.Type == "FlowRunCancelled"
		}) {
			out = append(out, "run "+id.String()+" cancelled")
		}
	}
	return out
}

func (w *apiWriter) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.acked = ackedWrites{}
}

// start writes every 300 ms until stop: a run of the batch deployment each
// time, every third time a new deployment, and every third time a run of
// the slow deployment that it then cancels.
func (w *apiWriter) start() {
	w.stopped, w.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(w.done)
		client := &http.Client{Timeout: time.Minute}
		for i := 0; ; i++ {
			select {
			case <-w.stopped:
				return
			case <-time.After(300 * time.Millisecond):
			}
			base := w.servers[i%len(w.servers)].url()
			id, err := post(client, base, "/deployments/"+w.batch.String()+"/runs")
			w.record(&w.acked.runs, id, err)
			switch i % 3 {
			case 1:
				id, err := post(client, base, "/deployments", domain.DeploymentSpec{
					Name: fmt.Sprintf("ha-saved-%s", uuid.NewString()[:8]), WorkQueue: w.queue,
					Flow: domain.FlowSpec{Name: "saved", Tasks: []domain.TaskSpec{{Name: "t", Command: []string{"true"}}}},
				})
				w.record(&w.acked.deployments, id, err)
			case 2:
				id, err := post(client, base, "/deployments/"+w.slow.String()+"/runs")
				if w.record(&w.acked.slowRuns, id, err) {
					_, err = post(client, base, "/runs/"+id.String()+"/cancel")
					w.record(&w.acked.cancelled, id, err)
				}
			}
		}
	}()
}

// record adds id to the writes acknowledged, or counts a failure, and
// reports whether the write was acknowledged.
func (w *apiWriter) record(to *[]uuid.UUID, id uuid.UUID, err error) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.acked.failed++
		return false
	}
	*to = append(*to, id)
	return true
}

// stop stops writing and returns what was acknowledged.
func (w *apiWriter) stop() ackedWrites {
	close(w.stopped)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked
}

// post sends a JSON body (an empty object without one) to the API at base
// and returns the id of what it answered with, or an error unless the
// answer is a 2xx.
func post(client *http.Client, base, path string, body ...any) (uuid.UUID, error) {
	var v any = map[string]any{}
	if len(body) > 0 {
		v = body[0]
	}
	b, err := json.Marshal(v)
	if err != nil {
		return uuid.Nil, err
	}
	resp, err := client.Post(base+"/api/v1"+path, "application/json", bytes.NewReader(b))
	if err != nil {
		return uuid.Nil, err
	}
	defer resp.Body.Close()
	var out struct {
		ID uuid.UUID `json:"id"`
	}
	if resp.StatusCode/100 != 2 {
		return uuid.Nil, fmt.Errorf("POST %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return uuid.Nil, fmt.Errorf("POST %s: %w", path, err)
	}
	return out.ID, nil
}

// whyNotEnded describes a run that does not end: the last event of each
// of its streams, and its task run jobs.
func (c *cluster) whyNotEnded(run uuid.UUID) string {
	ctx := context.Background()
	var b strings.Builder
	rows, err := c.db.Query(ctx, `
SELECT DISTINCT ON (stream_id) stream_type, type, version FROM events
WHERE stream_id = $1 OR stream_id IN (SELECT stream_id FROM events WHERE type = 'TaskRunCreated' AND data->>'flow_run_id' = $1::text)
ORDER BY stream_id, version DESC`, run)
	if err == nil {
		for rows.Next() {
			var stream, typ string
			var version int64
			if rows.Scan(&stream, &typ, &version) == nil {
				fmt.Fprintf(&b, "%s at %s (v%d); ", stream, typ, version)
			}
		}
		rows.Close()
	}
	rows, err = c.db.Query(ctx, `
SELECT id, state::text, attempt, coalesce(attempted_by[cardinality(attempted_by)], ''), args->>'attempt' FROM river_job
WHERE args->>'flow_run_id' = $1::text ORDER BY id`, run)
	if err == nil {
		for rows.Next() {
			var id int64
			var state, by, attempt string
			var tries int
			if rows.Scan(&id, &state, &tries, &by, &attempt) == nil {
				fmt.Fprintf(&b, "job %d %s (task attempt %s, River attempt %d, by %s); ", id, state, attempt, tries, by)
			}
		}
		rows.Close()
	}
	return b.String()
}

// notEnding waits, like waitEnded, until the runs end or make no progress
// for quiet, and returns those that did not end.
func (c *cluster) notEnding(runs []uuid.UUID, quiet time.Duration) []uuid.UUID {
	c.t.Helper()
	ended := func() map[uuid.UUID]bool {
		rows, err := c.db.Query(context.Background(), `SELECT DISTINCT stream_id FROM events WHERE stream_id = ANY($1) AND type = ANY($2)`, runs, terminalFlowRunEvents)
		if err != nil {
			return nil
		}
		ids, _ := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		out := map[uuid.UUID]bool{}
		for _, id := range ids {
			out[id] = true
		}
		return out
	}
	last, since := -1, time.Now()
	for {
		done := ended()
		if len(done) == len(runs) {
			return nil
		}
		if len(done) != last {
			last, since = len(done), time.Now()
		}
		if time.Since(since) > quiet {
			var stuck []uuid.UUID
			for _, id := range runs {
				if !done[id] {
					stuck = append(stuck, id)
				}
			}
			return stuck
		}
		time.Sleep(200 * time.Millisecond)
	}
}
