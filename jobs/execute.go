package jobs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	pythonsdk "github.com/ordoflow/ordo/sdk/python"
)

// MaxResultBytes is the largest result a task may return.
const MaxResultBytes = 1 << 20

// basicEnv are the worker's variables every command task gets, when the
// worker has them: what programs need to run at all, and nothing secret.
var basicEnv = []string{"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"}

// failed is the outcome of a failed attempt, with its error.
func failed(attempt int, format string, args ...any) commands.Outcome {
	return commands.Outcome{Failure: &domain.AttemptFailure{Attempt: attempt, Error: fmt.Sprintf(format, args...)}}
}

// planTimeout is the task's timeout; 0 means none.
func planTimeout(p commands.Plan) time.Duration {
	return time.Duration(p.Task.TimeoutSeconds * float64(time.Second))
}

// workspace returns (and creates) the flow run's directory on this worker.
func (w *Worker) workspace(flowRunID uuid.UUID) (string, error) {
	dir := filepath.Join(w.opts.WorkspaceDir, flowRunID.String())
	w.wsMu.Lock()
	made := w.workspaces[flowRunID]
	w.wsMu.Unlock()
	if made {
		return dir, nil
	}
	// One mkdir where the workspaces' directory exists, as it nearly always
	// does: MkdirAll would first look at every parent.
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", fmt.Errorf("create workspace: %w", err)
		}
	}
	w.wsMu.Lock()
	if len(w.workspaces) >= 10_000 {
		clear(w.workspaces) // forget old runs; MkdirAll again is harmless
	}
	w.workspaces[flowRunID] = true
	w.wsMu.Unlock()
	return dir, nil
}

// execute runs one attempt and reports how it ended.
func (w *Worker) execute(ctx context.Context, p commands.Plan, log *taskLog) commands.Outcome {
	if p.Fail != nil {
		log.system("%s", p.Fail.Error)
		return commands.Outcome{Failure: p.Fail}
	}
	switch p.Task.Kind() {
	case domain.TaskKindCommand:
		ws, err := w.workspace(p.FlowRunID)
		if err != nil {
			return failed(p.Attempt, "%v", err)
		}
		return w.runCommand(ctx, p, ws, log)
	case domain.TaskKindHandler:
		// made when the handler asks for it: most never do, and a
		// directory is a good part of a quick handler's cost
		return w.runHandler(ctx, p, sync.OnceValues(func() (string, error) { return w.workspace(p.FlowRunID) }), log)
	}
	return failed(p.Attempt, "task %s is a %q task, which this worker cannot run", p.Task.Name, p.Task.Kind())
}

// envByName is an environment as a map, made once per worker rather than
// once per task. A later entry wins, as it does for exec.
func envByName(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// commandEnv builds a command task's environment: the worker's basic
// variables (PATH, HOME, LANG, LC_ALL, TZ, TMPDIR), then the worker's
// variables the task names in inherit_env, then the task's env, then the
// ORDO_* contract variables; a later source wins. Nothing else of the
// worker's environment is passed, so its secrets do not leak into tasks.
func commandEnv(worker map[string]string, t domain.TaskSpec, contract map[string]string) []string {
	env := map[string]string{}
	for _, k := range append(slices.Clone(basicEnv), t.InheritEnv...) {
		if v, ok := worker[k]; ok {
			env[k] = v
		}
	}
	maps.Copy(env, t.Env)
	maps.Copy(env, contract)
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

func (w *Worker) runCommand(ctx context.Context, p commands.Plan, ws string, log *taskLog) commands.Outcome {
	resultPath, err := w.resultPath(p)
	if err != nil {
		return failed(p.Attempt, "%v", err)
	}
	files, err := w.commandFiles(ctx, p.InputFiles, resultPath)
	defer w.removeFiles(&files)
	if err != nil {
		return filesFailure(ctx, p, err, log)
	}
	cmd, err := w.commandFor(p, ws, resultPath, files)
	if err != nil {
		return failed(p.Attempt, "%v", err)
	}
	var deadline time.Time
	if d := planTimeout(p); d > 0 {
		deadline = time.Now().Add(d)
	}
	proc, out, end, warm := w.startWarm(ctx, p, cmd, deadline, log)
	if !warm {
		proc, out, err = startLogged(log, execStart(cmd))
		if err != nil {
			if out == nil {
				return failed(p.Attempt, "create pipe: %v", err)
			}
			log.system("could not start %q: %v", p.Task.Command[0], err)
			return failed(p.Attempt, "start command: %v", err)
		}
	}
	if proc != nil {
		end = w.waitCommand(ctx, proc, out, deadline)
	}
	o := commandOutcome(ctx, p, end, resultPath, log)
	if o.Failure != nil || o.Cancelled {
		return o
	}
	m, err := readMetrics(files.metricsPath)
	files.metricsGone = true
	return w.withFiles(ctx, p, o, files.outputDir(), m, err, log)
}

// filesFailure is the outcome of an attempt whose files failed; one the
// worker's stop interrupted is handed back, as a stopped process is.
func filesFailure(ctx context.Context, p commands.Plan, err error, log *taskLog) commands.Outcome {
	if errors.Is(context.Cause(ctx), errRunCancelled) {
		log.system("the flow run was cancelled while its files were moved")
		return commands.Outcome{Cancelled: true, LogTail: log.lastLines()}
	}
	log.system("%v", err)
	return commands.Outcome{Failure: &domain.AttemptFailure{Attempt: p.Attempt, Error: err.Error(), Interrupted: ctx.Err() != nil, LogTail: log.lastLines()}}
}

// withFiles adds a successful attempt's metrics (m, or the error reading
// them) and outputs (stored in the blob store first) to its outcome, or
// fails it when they are bad or the store failed: a normal failure, which
// the task's retries may retry.
func (w *Worker) withFiles(ctx context.Context, p commands.Plan, o commands.Outcome, outputDir string, m map[string]float64, mErr error, log *taskLog) commands.Outcome {
	if mErr != nil {
		return filesFailure(ctx, p, mErr, log)
	}
	if outputDir != "" {
		outs, err := w.storeOutputs(ctx, outputDir)
		if err != nil {
			return filesFailure(ctx, p, err, log)
		}
		if len(outs) > 0 {
			log.system("stored %d outputs", len(outs))
		}
		o.Outputs = outs
	}
	o.Metrics = m
	return o
}

// commandFor is the command of a task attempt, with its environment.
func (w *Worker) commandFor(p commands.Plan, ws, resultPath string, files attemptFiles) (*exec.Cmd, error) {
	params, err := json.Marshal(p.Params)
	if err != nil {
		return nil, fmt.Errorf("encode parameters: %w", err)
	}
	inputs, err := json.Marshal(p.Inputs)
	if err != nil {
		return nil, fmt.Errorf("encode inputs: %w", err)
	}
	cmd := command(w.commandPath(p.Task.Command[0]), p.Task.Command[1:]...)
	cmd.Env = commandEnv(w.env, p.Task, map[string]string{
		"ORDO_RUN_ID":      p.FlowRunID.String(),
		"ORDO_TASK_RUN_ID": p.TaskRunID.String(),
		"ORDO_TASK_NAME":   p.Task.Name,
		"ORDO_ATTEMPT":     strconv.Itoa(p.Attempt),
		"ORDO_PARAMETERS":  string(params),
		"ORDO_INPUTS":      string(inputs),
		"ORDO_RESULT_PATH": resultPath,
		"ORDO_WORKSPACE":   ws,
		// the data plane
		"ORDO_OUTPUT_DIR":   files.out.path,
		"ORDO_INPUT_DIR":    files.in.path,
		"ORDO_METRICS_PATH": files.metricsPath,
	})
	if pythonRunFile(p.Task.Command) != "" {
		dir, err := w.pythonSDK()
		if err != nil {
			return nil, err
		}
		cmd.Env = pythonsdk.WithPythonPath(cmd.Env, dir)
	}
	cmd.SysProcAttr = taskProcAttr()
	return cmd, nil
}

// taskProcess is a started task process: one the worker started itself, or
// one a warm interpreter forked for it. Either leads its own process group.
type taskProcess struct {
	pid  int             // also its process group's id
	exit <-chan procExit // how it ended, sent once
}

// procExit is how a task process ended.
type procExit struct {
	code   int            // its exit status; -1 when a signal killed it
	signal syscall.Signal // the signal that killed it, or 0
	err    error          // it could not be waited for
	lost   bool           // the warm interpreter that forked it died first
}

func (e procExit) failed() bool { return e.err != nil || e.lost || e.code != 0 }

func (e procExit) String() string {
	switch {
	case e.err != nil:
		return fmt.Sprintf("command failed: %v", e.err)
	case e.signal != 0:
		return fmt.Sprintf("killed by signal %s", e.signal)
	}
	return fmt.Sprintf("exited with code %d", e.code)
}

// execStart starts cmd as the worker's own child, with the given stdout
// and stderr.
func execStart(cmd *exec.Cmd) func(stdout, stderr *os.File) (*taskProcess, error) {
	return func(stdout, stderr *os.File) (*taskProcess, error) {
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		ch := make(chan procExit, 1)
		go func() {
			err := cmd.Wait()
			ch <- exitOf(cmd.ProcessState, err)
		}()
		return &taskProcess{pid: cmd.Process.Pid, exit: ch}, nil
	}
}

func exitOf(st *os.ProcessState, err error) procExit {
	if st == nil {
		return procExit{code: -1, err: err}
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return procExit{code: -1, signal: ws.Signal()}
	}
	return procExit{code: st.ExitCode()}
}

// commandOutput is a started command's stdout and stderr, read into its log.
type commandOutput struct {
	outR, errR *os.File
	readers    sync.WaitGroup
}

// startLogged starts a task process with start, its stdout and stderr
// read line by line into log. The output is nil when its pipes could not be
// made.
func startLogged(log *taskLog, start func(stdout, stderr *os.File) (*taskProcess, error)) (*taskProcess, *commandOutput, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, nil, err
	}
	proc, startErr := start(outW, errW)
	outW.Close()
	errW.Close()
	o := &commandOutput{outR: outR, errR: errR}
	if startErr != nil {
		outR.Close()
		errR.Close()
		return nil, o, startErr
	}
	o.readers.Go(func() { readLines(outR, func(s string) { log.line(StreamStdout, "", s) }) })
	o.readers.Go(func() { readLines(errR, func(s string) { log.line(StreamStderr, "", s) }) })
	return proc, o, nil
}

// commandEnd is how a command's process ended.
type commandEnd struct {
	exit     procExit
	timedOut bool // killed at the task's timeout
	stopped  bool // killed because the attempt's context ended
}

// waitCommand waits for a started command to end, killing its process
// group at the deadline (none when zero) or when ctx ends, then reads the
// rest of its output.
func (w *Worker) waitCommand(ctx context.Context, proc *taskProcess, out *commandOutput, deadline time.Time) commandEnd {
	pgid := proc.pid
	var timeoutC <-chan time.Time
	if !deadline.IsZero() {
		timer := time.NewTimer(time.Until(deadline))
		defer timer.Stop()
		timeoutC = timer.C
	}
	var end commandEnd
	select {
	case end.exit = <-proc.exit:
	case <-timeoutC:
		end.timedOut = true
		end.exit = w.killGroup(pgid, proc.exit)
	case <-ctx.Done():
		end.stopped = true
		end.exit = w.killGroup(pgid, proc.exit)
	}
	// Whatever the task left running in its group goes with it.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	if !waitTimeout(&out.readers, 2*time.Second) {
		// a process that left the group still holds the pipes
		out.outR.Close()
		out.errR.Close()
		out.readers.Wait()
	}
	out.outR.Close()
	out.errR.Close()
	return end
}

// commandOutcome is the outcome of a command that ended: its result, or
// why it failed or was stopped.
func commandOutcome(ctx context.Context, p commands.Plan, end commandEnd, resultPath string, log *taskLog) commands.Outcome {
	code := end.exit.code
	fail := func(msg string) commands.Outcome {
		_ = os.Remove(resultPath) // a result the task wrote before it failed
		// a worker that stops hands the attempt back: it runs again at once
		// elsewhere, without using one of the task's retries
		f := &domain.AttemptFailure{Attempt: p.Attempt, Error: msg, TimedOut: end.timedOut, Interrupted: end.stopped || end.exit.lost, LogTail: log.lastLines()}
		if code >= 0 && end.exit.err == nil && !end.exit.lost {
			f.ExitCode = &code
		}
		return commands.Outcome{Failure: f}
	}
	// what the task said last on stderr, for a failure's message: most
	// often the reason (a Python traceback's last line, say)
	why := func(msg string) string {
		if tail := log.stderrTail(); tail != "" {
			return msg + "; stderr: " + tail
		}
		return msg
	}
	switch {
	case end.timedOut:
		msg := fmt.Sprintf("timed out after %s: the process group was killed", planTimeout(p))
		log.system("%s", msg)
		return fail(why(msg))
	case end.stopped && errors.Is(context.Cause(ctx), errRunCancelled):
		_ = os.Remove(resultPath)
		log.system("the flow run was cancelled: the process group was killed")
		return commands.Outcome{Cancelled: true, LogTail: log.lastLines()}
	case end.stopped:
		msg := "the worker stopped while the task ran: the process group was killed and the attempt handed back"
		log.system("%s", msg)
		return fail(msg)
	case end.exit.lost:
		msg := "the warm Python interpreter died while the task ran: the process group was killed and the attempt handed back"
		log.system("%s", msg)
		return fail(msg)
	case end.exit.failed():
		msg := end.exit.String()
		log.system("%s", msg)
		return fail(why(msg))
	}
	result, err := readResult(resultPath)
	if err != nil {
		log.system("%v", err)
		return fail(err.Error())
	}
	// A command that wrote nothing and succeeded leaves no log, as a
	// handler does: its exit is its TaskRunCompleted event, and the rows and
	// their commit were a good part of a quick command's cost.
	if !log.silent() {
		log.system("exited with code 0")
	}
	return commands.Outcome{Result: result}
}

// killGroup stops the process group: SIGTERM, then SIGKILL after the grace
// period. It returns how the leader ended.
func (w *Worker) killGroup(pgid int, exit <-chan procExit) procExit {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	grace := time.NewTimer(w.opts.KillGrace)
	defer grace.Stop()
	select {
	case e := <-exit:
		return e
	case <-grace.C:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		return <-exit
	}
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// readLines calls fn with each line of r; very long lines come in pieces.
func readLines(r io.Reader, fn func(string)) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			fn(string(line))
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err != nil:
			return
		}
	}
}

// readResult reads the result a command task wrote at ORDO_RESULT_PATH: nil
// when it wrote none (or an empty file), else JSON of at most 1 MiB.
func readResult(path string) (json.RawMessage, error) {
	b, err := readTaskFile(path, MaxResultBytes, "result")
	if err != nil || b == nil {
		return nil, err
	}
	return checkResult(b, "the result written to ORDO_RESULT_PATH")
}

// readTaskFile reads up to max+1 bytes of a file a task wrote for the
// worker (nil when there is none), and removes it: each attempt has its
// own.
func readTaskFile(path string, max int64, what string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	defer os.Remove(path)
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return b, nil
}

// checkResult validates and compacts a result.
func checkResult(b []byte, what string) (json.RawMessage, error) {
	if len(b) > MaxResultBytes {
		return nil, fmt.Errorf("%s is larger than the %d bytes limit (1 MiB)", what, MaxResultBytes)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, nil
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		head := b[:min(len(b), 40)]
		return nil, fmt.Errorf("%s is not valid JSON (%v); it starts with %q", what, err, head)
	}
	return out.Bytes(), nil
}

func (w *Worker) runHandler(ctx context.Context, p commands.Plan, ws func() (string, error), log *taskLog) commands.Outcome {
	fn := w.opts.Handlers.lookup(p.Task.Handler)
	if fn == nil {
		msg := fmt.Sprintf("no handler %s registered on this worker", p.Task.Handler)
		log.system("%s", msg)
		return failed(p.Attempt, "%s", msg)
	}
	hctx, cancel := context.WithCancel(ctx)
	if d := planTimeout(p); d > 0 {
		hctx, cancel = context.WithTimeout(ctx, d)
	}
	defer cancel()
	files := &handlerFiles{ctx: hctx, w: w}
	defer files.release()
	tc := TaskContext{
		FlowRunID: p.FlowRunID, TaskRunID: p.TaskRunID, TaskName: p.Task.Name, Attempt: p.Attempt,
		Parameters: cloneParameters(p.Params), Inputs: cloneInputs(p.Inputs), InputFiles: cloneInputFiles(p.InputFiles),
		Logger: slogLogger(log), workspace: ws, files: files,
	}
	type ret struct {
		v   any
		err error
	}
	done := make(chan ret, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- ret{err: fmt.Errorf("handler panicked: %v", r)}
			}
		}()
		v, err := fn(hctx, tc)
		done <- ret{v, err}
	}()
	var r ret
	select {
	case r = <-done:
	case <-hctx.Done():
		// give the handler the grace period to notice its context
		select {
		case r = <-done:
		case <-time.After(w.opts.KillGrace):
			r.err = hctx.Err()
		}
	}
	timedOut := errors.Is(hctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	if ctx.Err() != nil && errors.Is(context.Cause(ctx), errRunCancelled) {
		log.system("the flow run was cancelled: the handler's context was cancelled")
		return commands.Outcome{Cancelled: true, LogTail: log.lastLines()}
	}
	if r.err != nil || timedOut {
		msg := fmt.Sprint(r.err)
		if timedOut {
			msg = fmt.Sprintf("timed out after %s", planTimeout(p))
		}
		log.system("%s", msg)
		f := &domain.AttemptFailure{Attempt: p.Attempt, Error: msg, TimedOut: timedOut, Interrupted: ctx.Err() != nil, LogTail: log.lastLines()}
		return commands.Outcome{Failure: f}
	}
	res, err := encodeResult(r.v)
	if err != nil {
		log.system("%v", err)
		return failed(p.Attempt, "%v", err)
	}
	m, outputDir, err := files.recorded()
	return w.withFiles(ctx, p, commands.Outcome{Result: res}, outputDir, m, err, log)
}
