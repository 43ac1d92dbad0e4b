package commands

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// unitOfWork holds the streams one transaction decides on: their state as
// read, the events decided so far (applied to that state, so that later
// decisions in the same transaction see them), and appends them all at the
// end with the versions they were read at.
type unitOfWork struct {
	store    *eventstore.Store
	tasks    *taskRunCache // optional: committed task run states seen before
	seeds    map[uuid.UUID]domain.TaskRun
	taskRuns map[uuid.UUID]*taskRunEntry
	flowRuns map[uuid.UUID]*flowRunEntry
	order    []uuid.UUID // streams in the order they got events
	chunks   map[uuid.UUID][]chunk
	base     map[uuid.UUID]int64 // version each stream was read at

	// trusted are task runs whose cached or seeded state is taken as
	// current without reading their stream; unverified holds those so
	// taken, at their version. A decision that appends to such a task run
	// is checked by the append (a stream past its version refuses it);
	// verify reads the others.
	trusted    map[uuid.UUID]bool
	unverified map[uuid.UUID]int64
	// epoch is the database history this unit reads (eventstore's
	// HistoryEpoch when it began): what it learns is cached only while
	// that history is current.
	epoch uint64
}

type taskRunEntry struct{ run domain.TaskRun }

type flowRunEntry struct{ run domain.FlowRun }

// chunk is a run of events on one stream that share metadata.
type chunk struct {
	meta   domain.Metadata
	events []domain.Event
}

func newUnitOfWork(store *eventstore.Store) *unitOfWork {
	return &unitOfWork{
		store:    store,
		taskRuns: map[uuid.UUID]*taskRunEntry{},
		flowRuns: map[uuid.UUID]*flowRunEntry{},
		chunks:   map[uuid.UUID][]chunk{},
		base:     map[uuid.UUID]int64{},
		epoch:    eventstore.HistoryEpoch(),
	}
}

// loadTaskRuns reads the task runs not loaded yet, in one statement: only
// the events after the state the task run cache holds.
func (u *unitOfWork) loadTaskRuns(ctx context.Context, q eventstore.Querier, ids []uuid.UUID) error {
	after := map[uuid.UUID]int64{}
	u.prepareTaskRuns(ids, after)
	if len(after) == 0 {
		return nil
	}
	envs, err := u.store.ReadStreamsAfter(ctx, q, after)
	if err != nil {
		return err
	}
	return u.applyTaskEvents(envs, after)
}

// prepareTaskRuns registers the task runs of ids not loaded yet at their
// cached (or seeded) state, and adds to after the version to read them
// after.
func (u *unitOfWork) prepareTaskRuns(ids []uuid.UUID, after map[uuid.UUID]int64) {
	for _, id := range ids {
		if _, ok := u.taskRuns[id]; ok {
			continue
		}
		run, known := u.tasks.get(id)
		if !known {
			run, known = u.seeds[id]
		}
		if !known {
			run = domain.TaskRun{ID: id}
		}
		u.taskRuns[id] = &taskRunEntry{run: run}
		if known && u.trusted[id] {
			if u.unverified == nil {
				u.unverified = map[uuid.UUID]int64{}
			}
			u.unverified[id] = run.Version
			u.base[id] = run.Version
			continue
		}
		if known && u.trusted != nil && run.State.Type == domain.Completed {
			// A completed task run never changes: no transition leaves
			// COMPLETED, and a late result refused on it leaves its state
			// and result as they are. Its cached state needs no reading
			// (a run of 10,000 tasks read every one of them to build its
			// result); should it get an event, an append at a version
			// behind a refusal fails and the batch is decided again on
			// read state.
			u.base[id] = run.Version
			continue
		}
		after[id] = run.Version
	}
}

// errStale says that a task run taken as current from the cache had moved
// on: the transaction must be decided again on state read from the log.
var errStale = errors.New("a cached task run state was out of date")

// verify reads the task runs taken as current without reading that got no
// event to append: a decision that appends nothing is only as current as
// the state it was made on. It returns errStale when any of them moved on.
func (u *unitOfWork) verify(ctx context.Context, q eventstore.Querier) error {
	after := map[uuid.UUID]int64{}
	for id, v := range u.unverified {
		if len(u.chunks[id]) == 0 {
			after[id] = v
		}
	}
	if len(after) == 0 {
		return nil
	}
	envs, err := u.store.ReadStreamsAfter(ctx, q, after)
	if err != nil {
		return err
	}
	if len(envs) > 0 {
		return errStale
	}
	return nil
}

// applyTaskEvents folds the events read for prepared task runs (other
// streams' events are skipped) and records the versions they were read at.
func (u *unitOfWork) applyTaskEvents(envs []domain.Envelope, after map[uuid.UUID]int64) error {
	for _, e := range envs {
		if _, prepared := after[e.StreamID]; !prepared {
			continue
		}
		ent := u.taskRuns[e.StreamID]
		if e.StreamType != domain.StreamTaskRun {
			return fmt.Errorf("stream %s is a %s, not a task run", e.StreamID, e.StreamType)
		}
		ent.run = ent.run.Apply(e.Event, e.RecordedAt)
		ent.run.Version = e.Version
	}
	for id := range after {
		u.base[id] = u.taskRuns[id].run.Version
	}
	return nil
}

// seedCreated tells loadTaskRuns the first event of task runs of fr: each
// task run's stream starts with TaskRunCreated{FlowRunID, Task}, appended
// with its flow run, so its state after that event follows from the flow
// run already read, and only the events after it need reading (and
// decoding). The seeded state's timestamp is unknown and left zero.
func (u *unitOfWork) seedCreated(fr domain.FlowRun, ix *flowIndex, ids []uuid.UUID) {
	if u.seeds == nil {
		u.seeds = map[uuid.UUID]domain.TaskRun{}
	}
	for _, id := range ids {
		t, ok := ix.task(fr, ix.names[id])
		if !ok {
			continue
		}
		run := domain.TaskRun{ID: id}.Apply(domain.TaskRunCreated{FlowRunID: fr.ID, Task: t}, time.Time{})
		run.Version = 1
		u.seeds[id] = run
	}
}

// remember keeps the task runs' states in the task run cache: call it once
// the transaction committed.
func (u *unitOfWork) remember() {
	if u.tasks == nil {
		return
	}
	for _, ent := range u.taskRuns {
		if !ent.run.State.IsZero() {
			u.tasks.put(ent.run, u.epoch)
		}
	}
}

// taskRunCache keeps the last committed state of recently used task runs, so
// that a task run read again (its outcome after its start) costs no decoding
// of the events already folded. Events never change: a state folded from
// committed events stays true up to its version.
type taskRunCache struct {
	mu    sync.Mutex
	max   int
	runs  map[uuid.UUID]domain.TaskRun
	order []uuid.UUID // insertion order, for eviction
	epoch uint64      // the database history the states are of
}

// fresh empties the cache when the database's history changed since it
// was filled (a failover lost commits whose states it may hold), and
// returns the current history; called with c.mu held.
func (c *taskRunCache) fresh() uint64 {
	if e := eventstore.HistoryEpoch(); e != c.epoch {
		c.runs, c.order, c.epoch = map[uuid.UUID]domain.TaskRun{}, nil, e
	}
	return c.epoch
}

func newTaskRunCache(max int) *taskRunCache {
	return &taskRunCache{max: max, runs: map[uuid.UUID]domain.TaskRun{}}
}

func (c *taskRunCache) get(id uuid.UUID) (domain.TaskRun, bool) {
	if c == nil {
		return domain.TaskRun{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fresh()
	r, ok := c.runs[id]
	return r, ok
}

// put keeps r, read or committed in database history epoch.
func (c *taskRunCache) put(r domain.TaskRun, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fresh() != epoch {
		return
	}
	if old, ok := c.runs[r.ID]; ok {
		if old.Version < r.Version {
			c.runs[r.ID] = r
		}
		return
	}
	if len(c.order) >= c.max {
		delete(c.runs, c.order[0])
		c.order = c.order[1:]
	}
	c.runs[r.ID] = r
	c.order = append(c.order, r.ID)
}

// taskRun returns a loaded task run.
func (u *unitOfWork) taskRun(id uuid.UUID) domain.TaskRun { return u.taskRuns[id].run }

// putFlowRun registers a flow run read by the caller at its version.
func (u *unitOfWork) putFlowRun(r domain.FlowRun) {
	if _, ok := u.flowRuns[r.ID]; ok {
		return
	}
	u.flowRuns[r.ID] = &flowRunEntry{run: r}
	u.base[r.ID] = r.Version
}

func (u *unitOfWork) flowRun(id uuid.UUID) (domain.FlowRun, bool) {
	ent, ok := u.flowRuns[id]
	if !ok {
		return domain.FlowRun{}, false
	}
	return ent.run, true
}

// decideTaskRun decides cmd on a loaded task run and records the events.
func (u *unitOfWork) decideTaskRun(id uuid.UUID, cmd domain.TaskRunCommand, meta domain.Metadata) ([]domain.Event, error) {
	ent := u.taskRuns[id]
	events, err := domain.DecideTaskRun(ent.run, cmd)
	if err != nil || len(events) == 0 {
		return nil, err
	}
	for _, e := range events {
		ent.run = ent.run.Apply(e, time.Now())
	}
	u.record(id, events, meta)
	return events, nil
}

// decideFlowRun decides cmd on a registered flow run and records the events.
func (u *unitOfWork) decideFlowRun(id uuid.UUID, cmd domain.FlowRunCommand, meta domain.Metadata) ([]domain.Event, error) {
	ent := u.flowRuns[id]
	events, err := domain.DecideFlowRun(ent.run, cmd)
	if err != nil || len(events) == 0 {
		return nil, err
	}
	for _, e := range events {
		ent.run = ent.run.Apply(e, time.Now())
	}
	u.record(id, events, meta)
	return events, nil
}

// create records the first events of a new stream.
func (u *unitOfWork) create(id uuid.UUID, events []domain.Event, meta domain.Metadata) {
	u.base[id] = 0
	u.record(id, events, meta)
}

func (u *unitOfWork) record(id uuid.UUID, events []domain.Event, meta domain.Metadata) {
	cs := u.chunks[id]
	if len(cs) == 0 {
		u.order = append(u.order, id)
	}
	if n := len(cs); n > 0 && cs[n-1].meta == meta {
		cs[n-1].events = append(cs[n-1].events, events...)
	} else {
		cs = append(cs, chunk{meta: meta, events: events})
	}
	u.chunks[id] = cs
}

// flush appends every recorded event: one statement, or one per round
// when a stream got events with different metadata. Afterwards the unit of
// work is empty again and its streams are at their new versions.
func (u *unitOfWork) flush(ctx context.Context, tx pgx.Tx) error {
	for round := 0; ; round++ {
		var appends []eventstore.Append
		for _, id := range u.order {
			cs := u.chunks[id]
			if round >= len(cs) {
				continue
			}
			appends = append(appends, eventstore.Append{
				StreamID: id, ExpectedVersion: u.base[id], Events: cs[round].events, Metadata: cs[round].meta,
			})
			u.base[id] += int64(len(cs[round].events))
		}
		if len(appends) == 0 {
			break
		}
		if err := u.store.Save(ctx, tx, appends...); err != nil {
			return err
		}
	}
	for id, v := range u.base {
		if ent, ok := u.taskRuns[id]; ok {
			ent.run.Version = v
		}
		if ent, ok := u.flowRuns[id]; ok {
			ent.run.Version = v
		}
	}
	u.order, u.chunks = nil, map[uuid.UUID][]chunk{}
	return nil
}

// readFlowRuns folds several flow runs in one query.
func readFlowRuns(ctx context.Context, store *eventstore.Store, q eventstore.Querier, ids []uuid.UUID) (map[uuid.UUID]domain.FlowRun, error) {
	envs, err := store.ReadStreams(ctx, q, ids)
	if err != nil {
		return nil, err
	}
	runs := make(map[uuid.UUID]domain.FlowRun, len(ids))
	for _, id := range ids {
		runs[id] = domain.FlowRun{ID: id}
	}
	for _, e := range envs {
		if e.StreamType != domain.StreamFlowRun {
			return nil, fmt.Errorf("stream %s is a %s, not a flow run", e.StreamID, e.StreamType)
		}
		r := runs[e.StreamID].Apply(e.Event, e.RecordedAt)
		r.Version = e.Version
		runs[e.StreamID] = r
	}
	for _, id := range ids {
		if runs[id].State.IsZero() {
			return nil, domain.Errorf(domain.CodeNotFound, "flow run %s not found", id)
		}
	}
	return runs, nil
}
