package jobs_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/jobs"
)

// The test binary doubles as a worker process: with ORDO_TEST_WORKER set it
// runs jobs.NewWorker on the database and queue the environment names
// instead of the tests, so that tests can SIGKILL a real worker process.
func TestMain(m *testing.M) {
	if os.Getenv("ORDO_TEST_WORKER") != "" {
		os.Exit(testWorkerMain())
	}
	os.Exit(m.Run())
}

// testWorkerMain is the worker process: it prints "ready" once working and
// stops gracefully on SIGTERM.
func testWorkerMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pool, err := pgxpool.New(ctx, os.Getenv("ORDO_TEST_WORKER_DATABASE_URL"))
	if err != nil {
		logger.Error("connect", "err", err)
		return 1
	}
	defer pool.Close()
	store := eventstore.New(pool, domain.NewRegistry())
	defer store.Close()
	w, err := jobs.NewWorker(pool, store, jobs.WorkerOptions{
		Queues:            []string{os.Getenv("ORDO_TEST_WORKER_QUEUE")},
		Name:              os.Getenv("ORDO_TEST_WORKER"),
		WorkspaceDir:      os.Getenv("ORDO_TEST_WORKER_WORKSPACE"),
		HeartbeatInterval: 100 * time.Millisecond,
		KillGrace:         time.Second,
		Logger:            logger,
	})
	if err == nil {
		err = w.Start(context.WithoutCancel(ctx))
	}
	if err != nil {
		logger.Error("start worker", "err", err)
		return 1
	}
	fmt.Println("ready")
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Stop(sctx); err != nil {
		logger.Error("stop worker", "err", err)
		return 1
	}
	return 0
}

// workerProcess is a worker running in its own process.
type workerProcess struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process exited
}

// startWorkerProcess starts a worker process on the database at url,
// working queue, and waits until it works. It is killed, if still running,
// when the test ends.
func (b testBundle) startWorkerProcess(t *testing.T, url, name, queue string) *workerProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		"ORDO_TEST_WORKER="+name,
		"ORDO_TEST_WORKER_DATABASE_URL="+url,
		"ORDO_TEST_WORKER_QUEUE="+queue,
		"ORDO_TEST_WORKER_WORKSPACE="+b.workspace,
	)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &workerProcess{name: name, cmd: cmd, done: make(chan struct{})}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "ready" && !ok {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
	}()
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-p.done
	})
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("worker process %s exited before it was ready", name)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("worker process %s not ready within 20s", name)
	}
	return p
}

// signal sends sig to the worker process.
func (p *workerProcess) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s to worker %s: %v", sig, p.name, err)
	}
}

// wait waits for the process to exit.
func (p *workerProcess) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("worker process %s did not exit", p.name)
	}
}
