package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
)

// HandlerFunc runs a Go handler task. Its result is stored as JSON (at most
// 1 MiB; nil means no result); an error fails the attempt.
type HandlerFunc func(ctx context.Context, tc TaskContext) (any, error)

// Handlers are the Go handler tasks a worker binary offers, by name: a task
// with `handler: NAME` runs the function registered under NAME. The zero
// value is an empty set, ready to use.
type Handlers struct {
	mu sync.RWMutex
	m  map[string]HandlerFunc
}

// Handle registers fn under name, replacing any earlier one.
func (h *Handlers) Handle(name string, fn HandlerFunc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string]HandlerFunc{}
	}
	h.m[name] = fn
}

func (h *Handlers) lookup(name string) HandlerFunc {
	if h == nil {
		return nil
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.m[name]
}

// TaskContext is what a Go handler knows about the attempt it runs.
type TaskContext struct {
	FlowRunID uuid.UUID
	TaskRunID uuid.UUID
	TaskName  string
	Attempt   int // 1 for the first attempt
	// Parameters are the run's parameters merged with the task's own (the
	// task's win).
	Parameters map[string]any
	// Inputs are the results of the tasks this one depends on, by task name.
	Inputs map[string]json.RawMessage
	// InputFiles are the outputs of the tasks this one depends on, by task
	// name: open one with OpenInput.
	InputFiles map[string][]domain.Output
	// Logger writes to the task run's log.
	Logger *slog.Logger

	workspace func() (string, error)
	files     *handlerFiles
}

// handlerFiles are the outputs, inputs and metrics of one handler attempt.
// Its output directory is made when the handler first creates an output:
// a handler that never does costs no directory.
type handlerFiles struct {
	ctx context.Context // the attempt's
	w   *Worker         // nil under Handlers.Call: outputs go to a temporary directory

	mu       sync.Mutex
	dir      string // the output directory, once made
	metrics  map[string]float64
	releases []func()
}

// outputDir returns the attempt's output directory, made on first use.
func (f *handlerFiles) outputDir() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dir != "" {
		return f.dir, nil
	}
	if f.w == nil {
		dir, err := os.MkdirTemp("", "ordo-outputs-")
		f.dir = dir
		return dir, err
	}
	d, err := f.w.outDirs.get()
	if err != nil {
		return "", fmt.Errorf("create the output directory: %w", err)
	}
	f.dir = d.path
	return f.dir, nil
}

// openInput opens a blob, fetched into the worker's cache first.
func (f *handlerFiles) openInput(o domain.Output) (*os.File, error) {
	if f.w.opts.BlobStore == nil {
		return nil, errNoBlobStore
	}
	path, release, err := f.w.cache.acquire(f.ctx, o.SHA256, o.Size)
	if err != nil {
		return nil, err
	}
	file, err := os.Open(path)
	if err != nil {
		release()
		return nil, err
	}
	f.mu.Lock()
	f.releases = append(f.releases, release)
	f.mu.Unlock()
	return file, nil
}

var errNoFiles = errors.New("no outputs, inputs or metrics: this TaskContext was not made by a worker or by Handlers.Call")

// CreateOutput creates (or truncates) the output file name, a relative
// slash-separated path such as "model.pkl" or "plots/residuals.png". When
// the handler returns without error, every output it created is stored in
// the blob store and listed in the task run's completion; close each file
// before returning.
func (tc TaskContext) CreateOutput(name string) (*os.File, error) {
	if tc.files == nil {
		return nil, errNoFiles
	}
	if err := domain.ValidateOutputName(name); err != nil {
		return nil, err
	}
	dir, err := tc.files.outputDir()
	if err != nil {
		return nil, err
	}
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, fmt.Errorf("create output %q: %w", name, err)
	}
	return os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
}

// OpenInput opens, read-only, the output name of the upstream task task
// (see InputFiles), fetched into the worker's blob cache first when it is
// not there yet.
func (tc TaskContext) OpenInput(task, name string) (*os.File, error) {
	if tc.files == nil || tc.files.w == nil {
		return nil, errNoFiles
	}
	for _, o := range tc.InputFiles[task] {
		if o.Name != name {
			continue
		}
		f, err := tc.files.openInput(o)
		if err != nil {
			return nil, inputError(task, o, err)
		}
		return f, nil
	}
	return nil, fmt.Errorf("task %s left no output %q for this task", task, name)
}

// SetMetric records a metric of the attempt, such as "r2" or "rmse",
// replacing an earlier value of the same name. Metrics are recorded with
// the completion and must be finite.
func (tc TaskContext) SetMetric(name string, v float64) {
	tc.RecordMetrics(map[string]float64{name: v})
}

// RecordMetrics records several metrics at once (see SetMetric).
func (tc TaskContext) RecordMetrics(m map[string]float64) {
	if tc.files == nil {
		return
	}
	tc.files.mu.Lock()
	defer tc.files.mu.Unlock()
	if tc.files.metrics == nil {
		tc.files.metrics = map[string]float64{}
	}
	maps.Copy(tc.files.metrics, m)
}

// recorded returns the metrics recorded, checked, and the output directory
// if the handler made one.
func (f *handlerFiles) recorded() (map[string]float64, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := maps.Clone(f.metrics)
	if err := domain.ValidateMetrics(m); err != nil {
		return nil, f.dir, fmt.Errorf("the handler's metrics: %w", err)
	}
	return m, f.dir, nil
}

// release releases the input blobs the handler opened, and removes its
// output directory.
func (f *handlerFiles) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.releases {
		r()
	}
	f.releases = nil
	if f.dir != "" {
		_ = removeTree(f.dir)
		f.dir = ""
	}
}

// Workspace returns the flow run's workspace on this worker: a directory
// the run's tasks share (what one task writes there, a later task of the
// run on the same worker finds), kept until WorkspaceRetention after the
// run ended. It is made when first asked for, so a handler that never asks
// costs no directory. Under Handlers.Call it is a temporary directory,
// removed when Call returns.
func (tc TaskContext) Workspace() (string, error) {
	if tc.workspace == nil {
		return "", errors.New("no workspace: this TaskContext was not made by a worker or by Handlers.Call")
	}
	return tc.workspace()
}

// Call runs the handler registered under name as a worker would, without a
// database: its result is encoded to JSON (and checked against the 1 MiB
// limit). It lets a worker binary's handlers be tested alone. A nil
// tc.Logger discards; tc.Workspace is a temporary directory, and so is
// where CreateOutput writes (removed when Call returns); OpenInput finds
// nothing and metrics are dropped.
func (h *Handlers) Call(ctx context.Context, name string, tc TaskContext) (json.RawMessage, error) {
	fn := h.lookup(name)
	if fn == nil {
		return nil, fmt.Errorf("no handler %s registered on this worker", name)
	}
	if tc.Logger == nil {
		tc.Logger = slog.New(slog.DiscardHandler)
	}
	if tc.TaskName == "" {
		tc.TaskName = name
	}
	var tmp string
	tc.workspace = sync.OnceValues(func() (string, error) {
		dir, err := os.MkdirTemp("", "ordo-workspace-")
		tmp = dir
		return dir, err
	})
	// outputs go to a temporary directory too, and metrics nowhere
	tc.files = &handlerFiles{ctx: ctx}
	defer tc.files.release()
	defer func() {
		if tmp != "" {
			os.RemoveAll(tmp)
		}
	}()
	v, err := fn(ctx, tc)
	if err != nil {
		return nil, err
	}
	return encodeResult(v)
}

// cloneParameters copies parameters decoded from JSON, nested maps and
// lists included: a handler may change what it is given, and the worker
// shares a run's parameters among its tasks, and a flow spec's among the
// runs that have it.
func cloneParameters(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneValue(v)
	}
	return out
}

func cloneValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return cloneParameters(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = cloneValue(e)
		}
		return out
	}
	return v
}

// cloneInputFiles copies the upstream outputs, which the worker keeps
// cached with the task runs.
func cloneInputFiles(m map[string][]domain.Output) map[string][]domain.Output {
	if m == nil {
		return nil
	}
	out := make(map[string][]domain.Output, len(m))
	for k, v := range m {
		out[k] = slices.Clone(v)
	}
	return out
}

// cloneInputs copies upstream results, which the worker keeps cached.
func cloneInputs(m map[string]json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		out[k] = bytes.Clone(v)
	}
	return out
}

// encodeResult turns a handler's return value into a stored result.
func encodeResult(v any) (json.RawMessage, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode the handler's result: %w", err)
	}
	return checkResult(b, "the handler's result")
}
