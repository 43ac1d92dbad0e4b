package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/internal/apicontract"
)

// binDir holds the ordo binary, built once by the first test that needs it
// and removed by TestMain.
var binDir string

var buildOrdo = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(binDir, "ordo")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/ordo").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ../cmd/ordo: %v\n%s", err, out)
	}
	return bin, nil
})

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "ordo-chaos-bin-"); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// Application names the processes connect with, so that a test can tell a
// server's database sessions from a worker's in pg_stat_activity.
const (
	appServer = "chaos-server"
	appWorker = "chaos-worker"
)

// cluster is one database, the ordo processes started on it, and a pool the
// test reads the event log and the tables with.
type cluster struct {
	t      *testing.T
	bin    string // the ordo binary
	dbURL  string
	dir    string
	ledger string // where tasks record each execution (see ledgerTask)
	db     *pgxpool.Pool
	// extraEnv is more environment for the ordo processes started after
	// it is set.
	extraEnv []string
}

// newCluster migrates the database at dbURL with `ordo migrate up`.
func newCluster(t *testing.T, dbURL string) *cluster {
	t.Helper()
	bin, err := buildOrdo()
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, bin: bin, dbURL: dbURL, dir: t.TempDir()}
	c.ledger = filepath.Join(c.dir, "ledger")
	if out, err := c.ordo("migrate", "up"); err != nil {
		t.Fatalf("ordo migrate up: %v\n%s", err, out)
	}
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	c.db = pool
	return c
}

// env is the environment of an ordo process connecting as app.
func (c *cluster) env(app string) []string {
	u, err := url.Parse(c.dbURL)
	if err != nil {
		c.t.Fatalf("database URL: %v", err)
	}
	q := u.Query()
	q.Set("application_name", app)
	u.RawQuery = q.Encode()
	env := append(os.Environ(),
		"ORDO_DATABASE_URL="+u.String(),
		"ORDO_WORKSPACE_DIR="+filepath.Join(c.dir, "workspaces"),
		"ORDO_LOG_LEVEL=info")
	return append(env, c.extraEnv...)
}

// ordo runs an ordo command to its end and returns its output.
func (c *cluster) ordo(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = c.env("chaos-cli")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// proc is a long-lived ordo process.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

// spawn starts `ordo args...` as name. When the test ends it is stopped
// with SIGINT (SIGKILL after 40 s), and its output is shown if the test
// failed.
func (c *cluster) spawn(name, app string, args ...string) *proc {
	c.t.Helper()
	p := &proc{name: name, logPath: filepath.Join(c.dir, name+".log"), exited: make(chan struct{})}
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	p.cmd = exec.Command(c.bin, args...)
	p.cmd.Env = c.env(app)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		c.t.Fatalf("start ordo %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		_ = p.cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	c.t.Cleanup(func() {
		if p.alive() {
			_ = p.cmd.Process.Signal(os.Interrupt)
			select {
			case <-p.exited:
			case <-time.After(40 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		}
		if c.t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			s := string(b)
			if len(s) > 3000 {
				s = "..." + s[len(s)-3000:]
			}
			c.t.Logf("--- output of %s (ordo %s):\n%s", p.name, strings.Join(args, " "), s)
		}
	})
	return p
}

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL, waits until the process is gone and returns when the
// signal was sent.
func (p *proc) kill(t *testing.T) time.Time {
	t.Helper()
	at := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL %s: %v", p.name, err)
	}
	<-p.exited
	return at
}

// complaints summarises the warnings and errors p logged: how many, and
// each distinct message with its count, most frequent first.
func (p *proc) complaints() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	counts := map[string]int{}
	n := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		var rec struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || (rec.Level != "WARN" && rec.Level != "ERROR") {
			continue
		}
		n++
		counts[rec.Level+" "+rec.Msg]++
	}
	msgs := slices.SortedFunc(maps.Keys(counts), func(a, b string) int { return counts[b] - counts[a] })
	for i, m := range msgs {
		msgs[i] = fmt.Sprintf("%q ×%d", m, counts[m])
	}
	return fmt.Sprintf("%d warnings and errors logged: %s", n, strings.Join(msgs, ", "))
}

// server is an `ordo server` process.
type server struct {
	*proc
	addr string
}

func (s *server) url() string { return "http://" + s.addr }

// startServer starts `ordo server` on addr, or on a port of its choosing
// when addr is empty, and waits until it answers /healthz.
func (c *cluster) startServer(name, addr string) *server {
	c.t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	s := &server{proc: c.spawn(name, appServer, "server", "--addr", addr)}
	c.eventually(30*time.Second, name+" answers /healthz", func() bool {
		if !s.alive() {
			c.t.Fatalf("%s exited", name)
		}
		if s.addr = s.listening(); s.addr == "" {
			return false
		}
		resp, err := http.Get(s.url() + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return s
}

// listening returns the address the server logged it listens on, or "".
func (s *server) listening() string {
	b, _ := os.ReadFile(s.logPath)
	for line := range strings.SplitSeq(string(b), "\n") {
		var rec struct {
			Msg string `json:"msg"`
			URL string `json:"url"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "ordo server listening" {
			return strings.TrimPrefix(rec.URL, "http://")
		}
	}
	return ""
}

// startWorker starts `ordo worker --name name` on the queues.
func (c *cluster) startWorker(name string, concurrency int, queues ...string) *proc {
	c.t.Helper()
	args := []string{"worker", "--name", name, "--concurrency", strconv.Itoa(concurrency)}
	for _, q := range queues {
		args = append(args, "-q", q)
	}
	return c.spawn(name, appWorker, args...)
}

// eventually polls cond every 50 ms until it holds, and fails the test
// after timeout.
func (c *cluster) eventually(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("not within %v: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// quietBound is the longest a healthy cluster of these tests may go without
// progress on the work a test waits for: longer than a dead worker's
// heartbeat timeout (15 s) and the reaper's sweep that follows it, than a
// PostgreSQL restart and the reconnections after it, and than a waiting
// attempt's first rechecks. Under load everything is slower but keeps
// moving; what stops moving for this long is stuck.
const quietBound = time.Minute

// progressing waits until check reports done, logging every 10 s. check
// also returns a measure of progress (a count that grows while work gets
// done; negative when it could not be read). There is no deadline, since
// how long the work takes follows the machine's load: the test fails when
// the measure has not changed for quiet.
func (c *cluster) progressing(what string, quiet time.Duration, check func() (progress int, done bool), stalled ...func()) {
	c.t.Helper()
	start := time.Now()
	lastLog, lastProgress := start, start
	seen, longest := -1, time.Duration(0)
	for {
		progress, done := check()
		now := time.Now()
		if progress >= 0 && progress != seen {
			if seen >= 0 {
				longest = max(longest, now.Sub(lastProgress))
			}
			seen, lastProgress = progress, now
		}
		if done {
			c.t.Logf("  %s: done after %v; the longest time without progress: %v (bound %v)",
				what, now.Sub(start).Round(100*time.Millisecond), longest.Round(10*time.Millisecond), quiet)
			return
		}
		if now.Sub(lastProgress) > quiet {
			for _, f := range stalled { // what the caller logs to explain it
				f()
			}
			c.t.Fatalf("%s: no progress for %v (progress measure stuck at %d after %v)", what, quiet, seen, now.Sub(start).Round(time.Second))
		}
		if now.Sub(lastLog) > 10*time.Second {
			c.t.Logf("  %s: progress %d after %v", what, seen, now.Sub(start).Round(time.Second))
			lastLog = now
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// call sends a JSON request to the API of the server at base and decodes
// the answer into out; it fails the test unless the answer is a 2xx.
func (c *cluster) call(base, method, path string, body, out any) {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+"/api/v1"+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	// the answers are checked against the API's OpenAPI document
	resp, err := (&http.Client{Timeout: time.Minute, Transport: apicontract.Transport(c.t, nil)}).Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		c.t.Fatalf("%s %s: %s\n%s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: %v\n%s", method, path, err, b)
		}
	}
}

// deploy saves a deployment through the API of the server at base.
func (c *cluster) deploy(base string, spec domain.DeploymentSpec) uuid.UUID {
	c.t.Helper()
	var d struct {
		ID uuid.UUID `json:"id"`
	}
	c.call(base, http.MethodPost, "/deployments", spec, &d)
	return d.ID
}

// startRuns starts n runs of a deployment now and returns their ids.
func (c *cluster) startRuns(base string, deployment uuid.UUID, n int) []uuid.UUID {
	c.t.Helper()
	ids := make([]uuid.UUID, n)
	for i := range ids {
		var run struct {
			ID uuid.UUID `json:"id"`
		}
		c.call(base, http.MethodPost, "/deployments/"+deployment.String()+"/runs", map[string]any{}, &run)
		ids[i] = run.ID
	}
	return ids
}

// ledgerTask is a command task that sleeps for nap seconds and appends one
// line to the cluster's ledger when it ends: its label, task run id,
// attempt, and start and end times in nanoseconds. The ledger is what the
// tasks really did, independently of what Ordo recorded. Its result is
// {"attempt": N}. The times are bash's clock (microseconds, written in
// nanoseconds): the thousands of tasks of a chaos run then start one
// process besides sleep, not three.
func (c *cluster) ledgerTask(name, label string, nap float64, retries int, dependsOn ...string) domain.TaskSpec {
	return domain.TaskSpec{
		Name: name,
		Command: []string{"bash", "-c", `s=${EPOCHREALTIME//[.,]/}000; sleep "$NAP"; e=${EPOCHREALTIME//[.,]/}000
printf '{"attempt": %s}' "$ORDO_ATTEMPT" > "$ORDO_RESULT_PATH"
echo "$LABEL $ORDO_TASK_RUN_ID $ORDO_ATTEMPT $s $e" >> "$LEDGER"`},
		Env:       map[string]string{"LEDGER": c.ledger, "LABEL": label, "NAP": strconv.FormatFloat(nap, 'f', -1, 64)},
		Retries:   retries,
		DependsOn: dependsOn,
	}
}

// chains is a flow of n independent chains of steps ledger tasks each:
// task cIsJ depends on cIs(J-1).
func (c *cluster) chains(label string, n, steps int, nap float64, retries int) domain.FlowSpec {
	var tasks []domain.TaskSpec
	for chain := range n {
		for step := range steps {
			var deps []string
			if step > 0 {
				deps = []string{fmt.Sprintf("c%ds%d", chain, step-1)}
			}
			tasks = append(tasks, c.ledgerTask(fmt.Sprintf("c%ds%d", chain, step), label, nap, retries, deps...))
		}
	}
	return domain.FlowSpec{Name: "chains", Tasks: tasks}
}

// execution is one line of the ledger: one task process that ran to its end.
type execution struct {
	label      string
	taskRun    uuid.UUID
	attempt    int
	start, end time.Time
}

func (c *cluster) readLedger() []execution {
	c.t.Helper()
	f, err := os.Open(c.ledger)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	var out []execution
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var (
			e          execution
			id         string
			start, end int64
		)
		if _, err := fmt.Sscan(sc.Text(), &e.label, &id, &e.attempt, &start, &end); err != nil {
			c.t.Fatalf("ledger line %q: %v", sc.Text(), err)
		}
		e.taskRun = uuid.MustParse(id)
		e.start, e.end = time.Unix(0, start), time.Unix(0, end)
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		c.t.Fatal(err)
	}
	return out
}

// verifyReplay runs `ordo replay --verify --dry-run`: a fresh replay of the
// whole log into tables aside, compared row by row with the live read
// models, every event checked by the domain's log validator. It logs the
// report and fails the test unless everything is equal and legal.
func (c *cluster) verifyReplay() {
	c.t.Helper()
	out, err := c.ordo("replay", "--verify", "--dry-run")
	var report []string
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if !strings.Contains(line, " elapsed") { // not a progress line
			report = append(report, "  "+line)
		}
	}
	c.t.Logf("ordo replay --verify --dry-run:\n%s", strings.Join(report, "\n"))
	if err != nil {
		c.t.Fatalf("replay verify failed: %v", err)
	}
}

// projectionLag is how many events of the log the read models have not
// applied yet.
func (c *cluster) projectionLag(ctx context.Context) (int64, error) {
	var lag int64
	err := c.db.QueryRow(ctx, `
SELECT count(*) FROM events e, projection_checkpoints p
WHERE p.name = 'read_models' AND (e.transaction_id, e.position) > (p.transaction_id, p.position)`).Scan(&lag)
	return lag, err
}

// killWhen SIGKILLs p as soon as the query (one boolean) answers true,
// polling it every 2 ms for at most timeout; it kills p anyway when the
// timeout passes. It returns when the signal was sent and whether the
// condition was seen.
func (c *cluster) killWhen(p *proc, timeout time.Duration, query string, args ...any) (time.Time, bool) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		var yes bool
		err := c.db.QueryRow(ctx, query, args...).Scan(&yes)
		if err != nil && ctx.Err() == nil {
			c.t.Fatalf("kill condition: %v", err)
		}
		if yes || ctx.Err() != nil {
			return p.kill(c.t), yes
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// serverInTx is a killWhen query: a database session of a server has a
// transaction open that locked or wrote $1 (a table name), which a
// transaction holds until it ends.
const serverInTx = `
SELECT EXISTS (
    SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE a.application_name = '` + appServer + `' AND a.datname = current_database()
      AND l.relation = $1::regclass AND l.mode IN ('RowShareLock', 'RowExclusiveLock')
      AND a.backend_xid IS NOT NULL)`

// overlap is the most executions running at the same time.
func overlap(execs []execution) int {
	most, _ := busiest(execs)
	return most
}

// busiest returns the most executions running at the same time, and the
// first set of executions that ran at once that many.
func busiest(execs []execution) (int, []execution) {
	type edge struct {
		at    time.Time
		delta int
		i     int
	}
	edges := make([]edge, 0, 2*len(execs))
	for i, e := range execs {
		edges = append(edges, edge{e.start, 1, i}, edge{e.end, -1, i})
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // an end before a start at the same instant
	})
	most := 0
	var set []execution
	running := map[int]bool{}
	for _, e := range edges {
		if e.delta > 0 {
			running[e.i] = true
		} else {
			delete(running, e.i)
		}
		if len(running) > most {
			most = len(running)
			set = set[:0]
			for _, i := range slices.Sorted(maps.Keys(running)) {
				set = append(set, execs[i])
			}
		}
	}
	return most, set
}
