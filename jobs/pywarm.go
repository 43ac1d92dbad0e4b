package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ordoflow/ordo/commands"
	pythonsdk "github.com/ordoflow/ordo/sdk/python"
)

// maxWarm is how many warm interpreters a worker keeps; past it the least
// recently used is stopped.
const maxWarm = 8

// warmAnswerTimeout is how long a warm interpreter may take to answer a
// request before it is taken for broken.
const warmAnswerTimeout = time.Minute

// warmTries is how many warm interpreters one attempt asks before it runs
// cold: one that answers stale or dies is replaced and asked again.
const warmTries = 3

// pythonRunFile is the flow file of a Python task's command, argv
// [python3|python, -m, ordo, run, FILE, ...], or "" for another command.
func pythonRunFile(argv []string) string {
	if len(argv) < 5 || !isPython(argv[0]) || argv[1] != "-m" || argv[2] != "ordo" || argv[3] != "run" {
		return ""
	}
	return argv[4]
}

// pythonSDK is the directory, extracted once per worker under its
// workspace root, that puts the worker's own `ordo` package on a Python
// task's PYTHONPATH. An extraction that failed is tried again by the next
// task.
func (w *Worker) pythonSDK() (string, error) {
	w.sdkMu.Lock()
	defer w.sdkMu.Unlock()
	if w.sdkDir == "" {
		dir, err := pythonsdk.Extract(filepath.Join(w.opts.WorkspaceDir, ".python-sdk"))
		if err != nil {
			return "", err
		}
		w.sdkDir = dir
	}
	return w.sdkDir, nil
}

// warmRequest asks a warm interpreter to fork the child of one attempt.
type warmRequest struct {
	Argv []string          `json:"argv"`
	Env  map[string]string `json:"env"`
	Cwd  string            `json:"cwd"`
}

// warmMessage is any message of a warm interpreter.
type warmMessage struct {
	Ready  bool   `json:"ready"`
	Pid    int    `json:"pid"`
	Stale  bool   `json:"stale"`
	Error  string `json:"error"`
	Exit   int    `json:"exit"`
	Code   int    `json:"code"`
	Signal int    `json:"signal"`
}

// startWarm starts a Python task's attempt as a child of the warm
// interpreter of its flow file. warm is false when the attempt is to run
// cold: the warm interpreter is off or could not serve it. When the
// attempt's context or deadline ended while the interpreter was starting,
// proc is nil and end says which.
func (w *Worker) startWarm(ctx context.Context, p commands.Plan, cmd *exec.Cmd, deadline time.Time, log *taskLog) (proc *taskProcess, out *commandOutput, end commandEnd, warm bool) {
	file := pythonRunFile(p.Task.Command)
	if w.warm == nil || file == "" || cmd.Err != nil {
		return nil, nil, end, false
	}
	cwd, err := w.warm.cwd()
	if err != nil {
		return nil, nil, end, false
	}
	env := map[string]string{}
	var zygoteEnv []string
	for _, kv := range cmd.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
		if !strings.HasPrefix(k, "ORDO_") {
			zygoteEnv = append(zygoteEnv, kv)
		}
	}
	req, err := json.Marshal(warmRequest{Argv: p.Task.Command[3:], Env: env, Cwd: cwd})
	if err != nil {
		return nil, nil, end, false
	}
	abs := file
	if !filepath.IsAbs(file) {
		abs = filepath.Join(cwd, file)
	}
	key := strings.Join(append([]string{cmd.Path, abs, cwd}, zygoteEnv...), "\x00")
	var timeoutC <-chan time.Time
	if !deadline.IsZero() {
		timer := time.NewTimer(time.Until(deadline))
		defer timer.Stop()
		timeoutC = timer.C
	}
	for range warmTries {
		z := w.warm.get(key, cmd.Path, file, cwd, zygoteEnv)
		if z == nil {
			return nil, nil, end, false
		}
		select {
		case <-z.ready:
		case <-ctx.Done():
			return nil, nil, commandEnd{exit: procExit{code: -1}, stopped: true}, true
		case <-timeoutC:
			return nil, nil, commandEnd{exit: procExit{code: -1}, timedOut: true}, true
		}
		if z.err != nil {
			return nil, nil, end, false // the import failed: cold, which shows why
		}
		proc, out, err = startLogged(log, func(stdout, stderr *os.File) (*taskProcess, error) {
			return z.fork(req, stdout, stderr)
		})
		switch {
		case err == nil:
			return proc, out, end, true
		case errors.Is(err, errWarmStale), errors.Is(err, errWarmDead):
			w.warm.forget(z)
			continue
		case out == nil:
			return nil, nil, end, false
		}
		w.opts.Logger.Warn("warm Python interpreter refused a task; it runs cold", "file", file, "err", err)
		return nil, nil, end, false
	}
	return nil, nil, end, false
}

var (
	errWarmStale = errors.New("the warm interpreter's modules changed")
	errWarmDead  = errors.New("the warm interpreter died")
)

// warmPool is a worker's warm interpreters, one per interpreter, flow
// file, working directory and environment.
type warmPool struct {
	logger *slog.Logger
	max    int // interpreters kept

	mu      sync.Mutex
	zygotes map[string]*zygote
	tick    uint64
	closed  bool
	wd      string
}

func newWarmPool(logger *slog.Logger) *warmPool {
	return &warmPool{logger: logger, max: maxWarm, zygotes: map[string]*zygote{}}
}

// cwd is the worker's working directory, where tasks run.
func (p *warmPool) cwd() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.wd == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		p.wd = wd
	}
	return p.wd, nil
}

// get returns the interpreter of key, starting it when there is none; nil
// once the pool is closed.
func (p *warmPool) get(key, python, file, cwd string, env []string) *zygote {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.tick++
	if z := p.zygotes[key]; z != nil {
		z.used = p.tick
		return z
	}
	if len(p.zygotes) >= p.max {
		var lru *zygote
		for _, z := range p.zygotes {
			if lru == nil || z.used < lru.used {
				lru = z
			}
		}
		delete(p.zygotes, lru.key)
		lru.retire()
	}
	z := &zygote{key: key, used: p.tick, ready: make(chan struct{}), done: make(chan struct{}),
		answers: make(chan warmAnswer, 1), children: map[int]chan procExit{}, logger: p.logger}
	p.zygotes[key] = z
	go func() {
		z.start(python, file, cwd, env)
		if z.err == nil {
			<-z.done
		}
		p.forget(z)
	}()
	return z
}

// forget drops z, which failed or went stale, so that the next attempt
// starts another.
func (p *warmPool) forget(z *zygote) {
	p.mu.Lock()
	if p.zygotes[z.key] == z {
		delete(p.zygotes, z.key)
	}
	p.mu.Unlock()
	z.retire()
}

// close stops every interpreter, once the worker's attempts ended.
func (p *warmPool) close() {
	p.mu.Lock()
	p.closed = true
	zs := slices.Collect(func(yield func(*zygote) bool) {
		for _, z := range p.zygotes {
			if !yield(z) {
				return
			}
		}
	})
	clear(p.zygotes)
	p.mu.Unlock()
	for _, z := range zs {
		z.stop()
		<-z.ready
		if z.err == nil {
			<-z.done
		}
	}
}

// zygote is one warm interpreter, `python -m ordo warm FILE`.
type zygote struct {
	key    string
	used   uint64 // the pool's tick when last asked for
	logger *slog.Logger

	ready chan struct{} // closed once started or failed
	err   error         // why it did not start
	done  chan struct{} // closed once it exited and was waited for
	cmd   *exec.Cmd
	conn  *net.UnixConn
	pid   int

	reqMu   sync.Mutex      // one request at a time
	answers chan warmAnswer // the answer to the request

	mu       sync.Mutex
	proc     *os.Process // once started
	children map[int]chan procExit
	asking   bool // a request waits for its answer
	dead     bool
	retired  bool // stop once its children ended
}

// warmAnswer is the answer to a request, with the exit channel of the
// child it forked.
type warmAnswer struct {
	warmMessage
	exit chan procExit
}

// start starts the interpreter and waits for it to be ready.
func (z *zygote) start(python, file, cwd string, env []string) {
	defer close(z.ready)
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		z.err = fmt.Errorf("socketpair: %w", err)
		return
	}
	// a request carries the attempt's environment, inputs included
	_ = syscall.SetsockoptInt(fds[0], syscall.SOL_SOCKET, syscall.SO_SNDBUF, 8<<20)
	ours, theirs := os.NewFile(uintptr(fds[0]), "warm"), os.NewFile(uintptr(fds[1]), "warm")
	defer theirs.Close()
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		theirs.Close()
		z.err = fmt.Errorf("socket: %w", err)
		return
	}
	z.conn = conn.(*net.UnixConn)
	stderr := &tailBuffer{max: 4 << 10}
	z.cmd = exec.Command(python, "-m", "ordo", "warm", file)
	z.cmd.Env, z.cmd.Dir = env, cwd
	z.cmd.ExtraFiles = []*os.File{theirs}
	z.cmd.Stderr = stderr
	z.cmd.SysProcAttr = taskProcAttr()
	z.cmd.WaitDelay = time.Second // its stderr, should a child keep it
	if err := z.cmd.Start(); err != nil {
		z.conn.Close()
		z.err = err
		return
	}
	theirs.Close()
	z.mu.Lock()
	z.proc = z.cmd.Process
	if z.retired { // the pool closed meanwhile: what follows fails
		_ = z.proc.Kill()
	}
	z.mu.Unlock()
	m, err := z.read(make([]byte, 4<<10))
	if err != nil || !m.Ready {
		z.conn.Close()
		_ = z.cmd.Process.Kill()
		werr := z.cmd.Wait()
		z.err = fmt.Errorf("warm interpreter did not start (%v): %s", werr, bytes.TrimSpace(stderr.bytes()))
		z.logger.Debug("warm Python interpreter did not start; its tasks run cold", "file", file, "err", z.err)
		return
	}
	z.pid = m.Pid
	z.logger.Debug("warm Python interpreter started", "file", file, "pid", z.pid)
	exited := make(chan struct{})
	go func() {
		_ = z.cmd.Wait()
		// what it sent before it exited is read; a child that still holds
		// the socket does not keep it open
		_ = z.conn.SetReadDeadline(time.Now().Add(time.Second))
		close(exited)
	}()
	go z.readLoop(exited)
}

// read reads one message.
func (z *zygote) read(buf []byte) (warmMessage, error) {
	var m warmMessage
	n, _, _, _, err := z.conn.ReadMsgUnix(buf, nil)
	if err == nil && n == 0 {
		err = errWarmDead
	}
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal(buf[:n], &m)
}

// readLoop reads the interpreter's answers and its children's exits until
// it dies; the children it leaves have their groups killed and are lost.
func (z *zygote) readLoop(exited <-chan struct{}) {
	buf := make([]byte, 4<<10)
	for {
		m, err := z.read(buf)
		if err != nil {
			break
		}
		z.mu.Lock()
		switch {
		case m.Exit != 0:
			e := procExit{code: m.Code}
			if m.Signal != 0 {
				e = procExit{code: -1, signal: syscall.Signal(m.Signal)}
			}
			if ch := z.children[m.Exit]; ch != nil {
				delete(z.children, m.Exit)
				ch <- e
			} else if z.asking {
				// The child answers, the interpreter sends its exit, which comes
				// after the answer: the child that took the request died before
				// it answered.
				z.asking = false
				ch := make(chan procExit, 1)
				ch <- e
				z.answers <- warmAnswer{warmMessage{Pid: m.Exit}, ch}
			}
			if z.retired && len(z.children) == 0 {
				_ = z.proc.Kill()
			}
		case m.Pid != 0:
			// registered before the answer is read: its exit may come next
			ch := make(chan procExit, 1)
			z.children[m.Pid] = ch
			z.asking = false
			z.answers <- warmAnswer{m, ch}
		default:
			z.asking = false
			z.answers <- warmAnswer{warmMessage: m}
		}
		z.mu.Unlock()
	}
	_ = z.proc.Kill()
	z.mu.Lock()
	z.dead = true
	for pid, ch := range z.children {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		ch <- procExit{code: -1, lost: true}
	}
	clear(z.children)
	z.mu.Unlock()
	<-exited
	z.conn.Close()
	close(z.done)
}

// fork asks for the child of one attempt, with the given stdout and stderr.
func (z *zygote) fork(req []byte, stdout, stderr *os.File) (*taskProcess, error) {
	z.reqMu.Lock()
	defer z.reqMu.Unlock()
	z.mu.Lock()
	dead := z.dead
	z.asking = !dead
	z.mu.Unlock()
	if dead {
		return nil, errWarmDead
	}
	rights := syscall.UnixRights(int(stdout.Fd()), int(stderr.Fd()))
	if _, _, err := z.conn.WriteMsgUnix(req, rights, nil); err != nil {
		z.mu.Lock()
		z.asking = false
		z.mu.Unlock()
		if errors.Is(err, syscall.EMSGSIZE) {
			return nil, fmt.Errorf("a request of %d bytes is too large for the warm interpreter", len(req))
		}
		return nil, errWarmDead
	}
	var m warmAnswer
	// An answer is a matter of milliseconds; one that does not come means
	// the child that took the request was killed before it told the
	// interpreter so.
	timeout := time.NewTimer(warmAnswerTimeout)
	defer timeout.Stop()
	select {
	case m = <-z.answers:
	case <-timeout.C:
		z.logger.Warn("warm Python interpreter did not answer; it is stopped", "pid", z.pid, "after", warmAnswerTimeout)
		z.stop()
		<-z.done
		return nil, errWarmDead
	case <-z.done:
		select {
		case m = <-z.answers: // answered, then died: its child is lost already
		default:
			return nil, errWarmDead
		}
	}
	switch {
	case m.Stale:
		return nil, errWarmStale
	case m.Error != "":
		return nil, errors.New(m.Error)
	case m.Pid == 0:
		return nil, fmt.Errorf("unexpected answer %+v", m)
	}
	return &taskProcess{pid: m.Pid, exit: m.exit}, nil
}

// retire stops the interpreter once its children ended (at once when it
// has none).
func (z *zygote) retire() {
	z.mu.Lock()
	z.retired = true
	idle := len(z.children) == 0
	z.mu.Unlock()
	if idle {
		z.stop()
	}
}

// stop kills the interpreter; one not started yet is killed by start.
func (z *zygote) stop() {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.retired = true
	if z.proc != nil {
		_ = z.proc.Kill()
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = t.b[over:]
	}
	return len(p), nil
}

func (t *tailBuffer) bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.b)
}
