package jobs

import (
	"context"
	"sync"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// flowRunCache keeps the last folded state of recently used flow runs, so
// that a task start reads only the events appended since, not the run's
// FlowRunCreated (which holds the whole flow, thousands of tasks for a big
// one). Events never change, so a state folded from committed events stays
// true up to its version. It also keeps each run's DAG index.
type flowRunCache struct {
	mu    sync.Mutex
	max   int
	runs  map[uuid.UUID]*cachedFlowRun
	order []uuid.UUID // insertion order, for eviction
}

type cachedFlowRun struct {
	run   domain.FlowRun
	index *flowIndex
}

// flowIndex is a flow run's DAG by task run id, computed once per run.
type flowIndex struct {
	names map[uuid.UUID]string // task run id -> task name
	down  map[string][]string  // task -> tasks that depend on it
	sinks []string             // tasks nothing depends on, in spec order
}

func newFlowIndex(r domain.FlowRun) *flowIndex {
	ix := &flowIndex{names: make(map[uuid.UUID]string, len(r.TaskRunIDs)), down: r.Flow.Downstream()}
	for name, id := range r.TaskRunIDs {
		ix.names[id] = name
	}
	for _, t := range r.Flow.Tasks {
		if len(ix.down[t.Name]) == 0 {
			ix.sinks = append(ix.sinks, t.Name)
		}
	}
	return ix
}

// descendants returns every task that depends on name, directly or not.
func (ix *flowIndex) descendants(name string) []string {
	var out []string
	seen := map[string]bool{}
	stack := []string{name}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, d := range ix.down[n] {
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
				stack = append(stack, d)
			}
		}
	}
	return out
}

func newFlowRunCache(max int) *flowRunCache {
	return &flowRunCache{max: max, runs: map[uuid.UUID]*cachedFlowRun{}}
}

// load returns the flow run's current state as seen by q, and its index.
func (c *flowRunCache) load(ctx context.Context, store *eventstore.Store, q eventstore.Querier, id uuid.UUID) (domain.FlowRun, *flowIndex, error) {
	r := domain.FlowRun{ID: id}
	var ix *flowIndex
	c.mu.Lock()
	if cached, ok := c.runs[id]; ok {
		r, ix = cached.run, cached.index
	}
	c.mu.Unlock()
	envs, err := store.ReadStream(ctx, q, id, r.Version)
	if err != nil {
		return domain.FlowRun{}, nil, err
	}
	for _, e := range envs {
		if e.StreamType != domain.StreamFlowRun {
			return domain.FlowRun{}, nil, domain.Errorf(domain.CodeNotFound, "flow run %s not found", id)
		}
		r = r.Apply(e.Event, e.RecordedAt)
		r.Version = e.Version
	}
	if r.State.IsZero() {
		return r, nil, domain.Errorf(domain.CodeNotFound, "flow run %s not found", id)
	}
	if ix == nil {
		ix = newFlowIndex(r)
	}
	if len(envs) > 0 {
		c.put(r, ix)
	}
	return r, ix, nil
}

func (c *flowRunCache) put(r domain.FlowRun, ix *flowIndex) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.runs[r.ID]; ok {
		if old.run.Version < r.Version {
			old.run = r
		}
		return
	}
	if len(c.order) >= c.max {
		delete(c.runs, c.order[0])
		c.order = c.order[1:]
	}
	c.runs[r.ID] = &cachedFlowRun{run: r, index: ix}
	c.order = append(c.order, r.ID)
}
