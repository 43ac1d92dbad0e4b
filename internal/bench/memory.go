package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Memory is scenario 8: the resident memory of a server and of a worker,
// each a process of the ordo binary, while the worker runs scenario 1's
// two workloads and the server projects their events. Figures are bytes.
type Memory struct {
	ServerIdle, ServerPeak int64
	WorkerIdle, WorkerPeak int64
}

// MeasureMemory starts a server and a worker on a new database, creates
// scenario 1's runs, waits until the runs read model shows them all
// completed, and reads each process's peak resident set (VmHWM) from
// /proc.
func MeasureMemory(ctx context.Context, env Env, procs *Processes, sz Sizes) (Memory, error) {
	url, err := env.newDatabase(ctx)
	if err != nil {
		return Memory{}, err
	}
	addr, err := freeAddr()
	if err != nil {
		return Memory{}, err
	}
	env.logf("starting `ordo server` and `ordo worker` processes")
	server, err := startChild(procs.Server(ctx, url, addr), env, "server")
	if err != nil {
		return Memory{}, err
	}
	defer server.stop()
	if err := waitReady(ctx, "http://"+addr+"/readyz", server); err != nil {
		return Memory{}, err
	}
	// Idle: both have started, and the worker has registered.
	worker, o, err := startWorker(ctx, env, procs, url)
	if err != nil {
		return Memory{}, err
	}
	defer worker.stop()
	defer o.Close()
	var m Memory
	if m.ServerIdle, err = procStatus(server.cmd.Process.Pid, "VmRSS"); err != nil {
		return m, err
	}
	if m.WorkerIdle, err = procStatus(worker.cmd.Process.Pid, "VmRSS"); err != nil {
		return m, err
	}
	for _, w := range []struct{ runs, tasks int }{{1, sz.OneRunTasks}, {sz.Runs, sz.RunTasks}} {
		env.logf("%s run(s) of %s no-op tasks", count(w.runs), count(w.tasks))
		ids, err := o.createRuns(ctx, w.runs, noopFlow("bench", w.tasks, false))
		if err != nil {
			return m, err
		}
		if err := o.waitFor(ctx, `SELECT count(*) FROM flow_runs WHERE id = ANY($1) AND state_type = 'COMPLETED'`, len(ids), worker, ids); err != nil {
			return m, err
		}
	}
	if m.ServerPeak, err = procStatus(server.cmd.Process.Pid, "VmHWM"); err != nil {
		return m, err
	}
	if m.WorkerPeak, err = procStatus(worker.cmd.Process.Pid, "VmHWM"); err != nil {
		return m, err
	}
	return m, errors.Join(worker.stop(), server.stop())
}

// startWorker starts a worker process on the database and connects to it,
// and returns once the worker has registered (its heartbeat row).
func startWorker(ctx context.Context, env Env, procs *Processes, url string) (*child, *ordoDB, error) {
	worker, err := startChild(procs.Worker(ctx, url), env, "worker")
	if err != nil {
		return nil, nil, err
	}
	o, err := connectOrdo(ctx, env, url)
	if err == nil {
		err = o.waitFor(ctx, `SELECT count(*) FROM workers`, 1, worker)
		if err != nil {
			o.Close()
		}
	}
	if err != nil {
		_ = worker.stop()
		return nil, nil, err
	}
	return worker, o, nil
}

// waitFor polls the count query until it returns want, or the child exits.
func (o *ordoDB) waitFor(ctx context.Context, query string, want int, child *child, args ...any) error {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var n int
		if err := o.pool.QueryRow(ctx, query, args...).Scan(&n); err != nil {
			return err
		}
		if n == want {
			return nil
		}
		if child.exited() {
			return fmt.Errorf("the %s exited: %s", child.name, child.tail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d after 10 minutes", n, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func memoryScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	if opts.Processes == nil {
		return nil, errors.New("no ordo binary to start as a server and a worker (Options.Processes)")
	}
	sz := opts.Sizes
	m, err := MeasureMemory(ctx, env, opts.Processes, sz)
	if err != nil {
		return nil, err
	}
	row := func(what string, idle, peak int64) Row {
		return Row{
			What:    "peak resident memory (VmHWM) during scenario 1, " + what,
			Ordo:    mib(peak),
			Metrics: map[string]float64{"peak_rss_mib": float64(peak) / (1 << 20), "idle_rss_mib": float64(idle) / (1 << 20)},
			Note: fmt.Sprintf("%s when idle; the process worked or projected 1 run of %s and %s runs of %d no-op tasks",
				mib(idle), count(sz.OneRunTasks), count(sz.Runs), sz.RunTasks),
		}
	}
	return []Row{
		row("`ordo server` process (API, projector, scheduler, reaper)", m.ServerIdle, m.ServerPeak),
		row(fmt.Sprintf("`ordo worker` process (concurrency %d)", Concurrency), m.WorkerIdle, m.WorkerPeak),
	}, nil
}

// child is a running ordo process whose output goes to a file.
type child struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startChild(cmd *exec.Cmd, env Env, name string) (*child, error) {
	f, err := os.CreateTemp(env.TempDir, name+"-*.log")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, log: f.Name(), done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop ends the process with SIGTERM, as a supervisor would, and waits.
func (c *child) stop() error {
	if !c.exited() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	if c.err != nil {
		return fmt.Errorf("the %s: %w: %s", c.name, c.err, c.tail())
	}
	return nil
}

// tail is the end of the process's output.
func (c *child) tail() string {
	b, _ := os.ReadFile(c.log)
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

func waitReady(ctx context.Context, url string, c *child) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if c.exited() || time.Now().After(deadline) {
			return fmt.Errorf("the %s is not ready at %s: %s", c.name, url, c.tail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// procStatus reads a size field ("VmHWM", "VmRSS") of /proc/PID/status,
// in bytes.
func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, fmt.Errorf("read the memory of process %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
