package jobs

import (
	"context"
	"fmt"
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
	taskRuns map[uuid.UUID]*taskRunEntry
	flowRuns map[uuid.UUID]*flowRunEntry
	order    []uuid.UUID // streams in the order they got events
	chunks   map[uuid.UUID][]chunk
	base     map[uuid.UUID]int64 // version each stream was read at
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
	}
}

// loadTaskRuns reads the task runs not loaded yet, in one statement.
func (u *unitOfWork) loadTaskRuns(ctx context.Context, q eventstore.Querier, ids []uuid.UUID) error {
	var missing []uuid.UUID
	seen := map[uuid.UUID]bool{}
	for _, id := range ids {
		if _, ok := u.taskRuns[id]; !ok && !seen[id] {
			seen[id] = true
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	envs, err := u.store.ReadStreams(ctx, q, missing)
	if err != nil {
		return err
	}
	for _, id := range missing {
		u.taskRuns[id] = &taskRunEntry{run: domain.TaskRun{ID: id}}
	}
	for _, e := range envs {
		ent := u.taskRuns[e.StreamID]
		if ent == nil || e.StreamType != domain.StreamTaskRun {
			return fmt.Errorf("stream %s is a %s, not a task run", e.StreamID, e.StreamType)
		}
		ent.run = ent.run.Apply(e.Event, e.RecordedAt)
		ent.run.Version = e.Version
	}
	for _, id := range missing {
		u.base[id] = u.taskRuns[id].run.Version
	}
	return nil
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

// pending reports whether any events wait to be appended.
func (u *unitOfWork) pending() bool { return len(u.order) > 0 }

// flush appends every recorded event: one Append call, or one per round
// when a stream got events with different metadata. Afterwards the unit of
// work is empty again and its streams are at their new versions.
func (u *unitOfWork) flush(ctx context.Context, tx pgx.Tx) ([]domain.Envelope, error) {
	var all []domain.Envelope
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
		envs, err := u.store.Append(ctx, tx, appends...)
		if err != nil {
			return nil, err
		}
		all = append(all, envs...)
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
	return all, nil
}
