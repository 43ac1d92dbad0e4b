package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/google/uuid"
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
	// Logger writes to the task run's log.
	Logger *slog.Logger

	workspace func() (string, error)
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
// tc.Logger discards; tc.Workspace is a temporary directory.
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
