package commands

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/riverjob"
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
	epoch uint64      // the database history the states are of
}

// fresh empties the cache when the database's history changed since it
// was filled, and returns the current history; called with c.mu held.
func (c *flowRunCache) fresh() uint64 {
	if e := eventstore.HistoryEpoch(); e != c.epoch {
		c.runs, c.order, c.epoch = map[uuid.UUID]*cachedFlowRun{}, nil, e
	}
	return c.epoch
}

type cachedFlowRun struct {
	run   domain.FlowRun
	index *flowIndex
}

// flowIndex is a flow run's DAG by task run id, computed once per run.
type flowIndex struct {
	names map[uuid.UUID]string // task run id -> task name
	specs map[string]int       // task name -> its index in the flow's tasks
	down  map[string][]string  // task -> tasks that depend on it
	sinks []string             // tasks nothing depends on, in spec order
}

func newFlowIndex(r domain.FlowRun) *flowIndex {
	ix := &flowIndex{
		names: make(map[uuid.UUID]string, len(r.TaskRunIDs)),
		specs: make(map[string]int, len(r.Flow.Tasks)),
		down:  r.Flow.Downstream(),
	}
	for name, id := range r.TaskRunIDs {
		ix.names[id] = name
	}
	for i, t := range r.Flow.Tasks {
		ix.specs[t.Name] = i
	}
	for _, t := range r.Flow.Tasks {
		if len(ix.down[t.Name]) == 0 {
			ix.sinks = append(ix.sinks, t.Name)
		}
	}
	return ix
}

// task returns the spec of the named task of fr (whose index ix is).
func (ix *flowIndex) task(fr domain.FlowRun, name string) (domain.TaskSpec, bool) {
	i, ok := ix.specs[name]
	if !ok {
		return domain.TaskSpec{}, false
	}
	return fr.Flow.Tasks[i], true
}

// job is the job that works the given attempt of the named task of fr.
func (ix *flowIndex) job(fr domain.FlowRun, name string, attempt int, at, now time.Time) riverjob.Job {
	t, _ := ix.task(fr, name)
	return jobFor(fr, t, attempt, at, now)
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

// load returns the flow run's current state as seen by q, and its index;
// epoch is the database history q reads.
func (c *flowRunCache) load(ctx context.Context, store *eventstore.Store, q eventstore.Querier, id uuid.UUID, epoch uint64) (domain.FlowRun, *flowIndex, error) {
	r := domain.FlowRun{ID: id}
	var ix *flowIndex
	c.mu.Lock()
	c.fresh()
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
		c.put(r, ix, epoch)
	}
	return r, ix, nil
}

// loadMany is load for several flow runs, in one query. Runs that do not
// exist are missing from the result.
func (c *flowRunCache) loadMany(ctx context.Context, store *eventstore.Store, q eventstore.Querier, ids []uuid.UUID, epoch uint64) (map[uuid.UUID]*cachedFlowRun, error) {
	out := make(map[uuid.UUID]*cachedFlowRun, len(ids))
	after := make(map[uuid.UUID]int64, len(ids))
	c.mu.Lock()
	c.fresh()
	for _, id := range ids {
		if cached, ok := c.runs[id]; ok {
			out[id] = &cachedFlowRun{run: cached.run, index: cached.index}
		} else {
			out[id] = &cachedFlowRun{run: domain.FlowRun{ID: id}}
		}
		after[id] = out[id].run.Version
	}
	c.mu.Unlock()
	envs, err := store.ReadStreamsAfter(ctx, q, after)
	if err != nil {
		return nil, err
	}
	changed := map[uuid.UUID]bool{}
	for _, e := range envs {
		ent := out[e.StreamID]
		if e.StreamType != domain.StreamFlowRun {
			delete(out, e.StreamID)
			delete(after, e.StreamID)
			continue
		}
		if ent == nil {
			continue
		}
		ent.run = ent.run.Apply(e.Event, e.RecordedAt)
		ent.run.Version = e.Version
		changed[e.StreamID] = true
	}
	for id, ent := range out {
		if ent.run.State.IsZero() {
			delete(out, id)
			continue
		}
		if ent.index == nil {
			ent.index = newFlowIndex(ent.run)
		}
		if changed[id] {
			c.put(ent.run, ent.index, epoch)
		}
	}
	return out, nil
}

// snapshot returns the cached state of each of ids, and whether every one
// was cached.
func (c *flowRunCache) snapshot(ids []uuid.UUID) (map[uuid.UUID]*cachedFlowRun, bool) {
	out := make(map[uuid.UUID]*cachedFlowRun, len(ids))
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fresh()
	for _, id := range ids {
		cached, ok := c.runs[id]
		if !ok {
			return nil, false
		}
		out[id] = &cachedFlowRun{run: cached.run, index: cached.index}
	}
	return out, true
}

// put keeps r, read or committed in database history epoch.
func (c *flowRunCache) put(r domain.FlowRun, ix *flowIndex, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fresh() != epoch {
		return
	}
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
