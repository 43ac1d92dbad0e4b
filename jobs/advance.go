package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

type opKind int

const (
	opStart  opKind = iota // start the job's attempt
	opFinish               // record the job's outcome and complete the job
)

// taskOp is one item of a committed batch: a task run job starting or
// finishing.
type taskOp struct {
	kind    opKind
	ctx     context.Context // the job's work context
	job     *river.Job[TaskRunArgs]
	outcome outcome      // opFinish
	res     *startResult // opStart: set by the batch that committed
	// retried is set when an earlier commit of this op failed in a way that
	// leaves unknown whether it committed (the connection broke).
	retried bool
	// slot is set on an outcome whose start took a slot of its work queue's
	// concurrency limit, which the outcome frees.
	slot bool
	// early is set on an outcome recorded after its job returned to River,
	// whose completion of the job was left out before (recordOutcome).
	early bool
}

type startAction int

const (
	actionRun     startAction = iota // run the attempt in res.plan
	actionSkip                       // nothing to do: a stale or duplicate job
	actionRecover                    // the attempt was started by a worker that died: record it as crashed
	actionDone                       // settled within the start: a cache hit, or a sub-flow run started
	actionWait                       // no slot of the queue's concurrency limit free: the job waits for one
)

type startResult struct {
	action startAction
	reason string
	plan   execPlan
	slot   bool // the attempt holds a slot of its queue's concurrency limit
}

// commitBatch records a batch of starts or outcomes in one transaction.
func (w *Worker) commitBatch(ctx context.Context, ops []*taskOp) error {
	var (
		wake    bool
		refused []refusal
	)
	var s *settlement
	trust := true
	for {
		err := w.store.InTx(ctx, func(tx pgx.Tx) error {
			s = w.eng.newSettlement(w.meta)
			if err := w.decideBatch(ctx, tx, s, ops, trust); err != nil {
				return err
			}
			wake, refused = s.later, s.refused
			return nil
		})
		if err == nil {
			break
		}
		// A task run's cached state was out of date (another process
		// wrote to it): decide again on what the log says.
		if trust && (errors.Is(err, errStale) || errors.Is(err, eventstore.ErrConflict)) {
			trust = false
			continue
		}
		return err
	}
	s.u.remember()
	s.rememberFlowRuns()
	w.deleted.add(notEarly(s.deletedJobs, ops))
	w.wake.kick(s.wake)
	if wake && w.due != nil {
		w.due.Wake()
	}
	for _, r := range refused {
		w.opts.Logger.Warn("result of an attempt that is no longer current refused",
			"task_run_id", r.taskRunID, "attempt", r.event.Attempt, "current_attempt", r.event.CurrentAttempt, "outcome", r.event.Outcome)
	}
	return nil
}

// notEarly returns the deleted jobs but those of early outcomes, whose
// completion River was told to leave out before.
func notEarly(deleted []int64, ops []*taskOp) []int64 {
	early := map[int64]bool{}
	for _, op := range ops {
		if op.early {
			early[op.job.ID] = true
		}
	}
	if len(early) == 0 {
		return deleted
	}
	return slices.DeleteFunc(slices.Clone(deleted), func(id int64) bool { return early[id] })
}

// decideBatch does the work of commitBatch within tx. With trust, the task
// run of each job is taken as the worker's cache has it (or as created,
// when the cache does not have it) instead of read: the append of the
// events decided on it fails when the stream moved on, and a task run that
// gets no event is read before the commit (unitOfWork.verify).
func (w *Worker) decideBatch(ctx context.Context, tx pgx.Tx, s *settlement, ops []*taskOp, trust bool) error {
	u := s.u
	missing := map[uuid.UUID]bool{}
	if trust {
		u.trusted = make(map[uuid.UUID]bool, len(ops))
		for _, op := range ops {
			u.trusted[op.job.Args.TaskRunID] = true
		}
	}

	// Load every flow run and task run the batch needs: the task run of
	// each job and, for starts, those it depends on (its inputs).
	runIDs := make([]uuid.UUID, 0, len(ops))
	byRun := map[uuid.UUID][]*taskOp{}
	for _, op := range ops {
		a := op.job.Args
		runIDs = append(runIDs, a.FlowRunID)
		byRun[a.FlowRunID] = append(byRun[a.FlowRunID], op)
		if a.ChildFlowRunID != uuid.Nil {
			runIDs = append(runIDs, a.ChildFlowRunID)
		}
	}
	err := s.loadRunsAndTasks(ctx, tx, runIDs, func(fr domain.FlowRun, ix *flowIndex) []uuid.UUID {
		var ids, inputs []uuid.UUID
		for _, op := range byRun[fr.ID] {
			a := op.job.Args
			ids = append(ids, a.TaskRunID)
			if op.kind == opStart || a.ChildFlowRunID != uuid.Nil {
				if t, ok := ix.task(fr, ix.names[a.TaskRunID]); ok {
					for _, dep := range t.DependsOn {
						inputs = append(inputs, fr.TaskRunIDs[dep])
					}
				}
			}
		}
		for _, id := range inputs {
			// not trusted: a decision takes its result and appends nothing
			// to it, so it is read unless cached completed (prepareTaskRuns)
			delete(u.trusted, id)
		}
		ids = append(ids, inputs...)
		u.seedCreated(fr, ix, ids)
		return ids
	})
	if err != nil {
		return err
	}
	for _, op := range ops {
		if _, ok := u.flowRun(op.job.Args.FlowRunID); !ok {
			missing[op.job.Args.FlowRunID] = true
		}
	}
	landed, err := committedEarlier(ctx, tx, ops)
	if err != nil {
		return err
	}
	slots, err := w.lockQueueSlots(ctx, tx, ops)
	if err != nil {
		return err
	}

	var finished []*taskOp // ops whose job this transaction finishes
	for _, op := range ops {
		a := op.job.Args
		meta := s.metaFor(a.FlowRunID, "")
		var tr domain.TaskRun
		if !missing[a.FlowRunID] {
			tr = u.taskRun(a.TaskRunID)
		}
		if tr.State.IsZero() {
			if op.kind == opStart {
				op.res = &startResult{action: actionSkip, reason: "task run not found"}
			} else {
				finished = append(finished, op)
			}
			continue
		}
		fr, _ := u.flowRun(a.FlowRunID)
		if op.kind == opStart {
			// A start whose job ended with its earlier commit (a cache hit,
			// or a wait that handed the attempt to another job) is done.
			res := &startResult{action: actionSkip, reason: "the job ended with an earlier commit whose answer was lost"}
			if !landed[op.job.ID] {
				if res, err = w.decideStart(ctx, tx, s, op, fr, tr, meta, slots); err != nil {
					return err
				}
			}
			op.res = res
			slots.started(op, res.action)
			res.slot = res.action == actionRun && slots.holds(op)
			if res.action == actionDone {
				finished = append(finished, op)
			}
			continue
		}
		slots.finished(op)
		if landed[op.job.ID] {
			continue // this outcome was recorded by an earlier commit whose answer was lost
		}
		cmd, err := w.outcomeCommand(s, op, fr, tr)
		if err != nil {
			return err
		}
		if cmd != nil {
			if _, err := s.decide(a.TaskRunID, cmd, meta); err != nil {
				return err
			}
		}
		finished = append(finished, op)
	}

	if err := u.verify(ctx, tx); err != nil {
		return err
	}
	for _, op := range finished {
		s.finishedJobs = append(s.finishedJobs, op.job.ID)
	}
	s.deletedJobs = append(s.deletedJobs, s.finishedJobs...)
	for _, op := range ops {
		if op.res != nil && op.res.action == actionWait {
			s.deletedJobs = append(s.deletedJobs, op.job.ID) // handed to a new job
		}
	}
	if err := s.settle(ctx, tx); err != nil {
		return err
	}
	return slots.apply(ctx, tx, s)
}

// committedEarlier returns the retried ops whose job is no longer running
// or gone: their earlier commit went through (and deleted the job, as a
// finished one or one that handed a waiting start's attempt to another job).
func committedEarlier(ctx context.Context, tx pgx.Tx, ops []*taskOp) (map[int64]bool, error) {
	var ids []int64
	for _, op := range ops {
		if op.retried {
			ids = append(ids, op.job.ID)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := tx.Query(ctx, `
SELECT w.id FROM unnest($1::bigint[]) AS w(id)
WHERE NOT EXISTS (SELECT 1 FROM river_job j WHERE j.id = w.id AND j.state = 'running')`, ids)
	if err != nil {
		return nil, fmt.Errorf("check earlier commits: %w", err)
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("check earlier commits: %w", err)
	}
	landed := make(map[int64]bool, len(done))
	for _, id := range done {
		landed[id] = true
	}
	return landed, nil
}

// outcomeCommand turns a job's outcome into the command on its task run;
// nil when there is nothing to record.
func (w *Worker) outcomeCommand(s *settlement, op *taskOp, fr domain.FlowRun, tr domain.TaskRun) (domain.TaskRunCommand, error) {
	a := op.job.Args
	out := op.outcome
	current := tr.State.Type == domain.Running && tr.Attempt == a.Attempt
	switch {
	case a.ChildFlowRunID != uuid.Nil:
		child, _ := s.u.flowRun(a.ChildFlowRunID)
		return childOutcome(s, fr, tr, a, child)
	case out.cancelled:
		if !current {
			w.opts.Logger.Debug("cancelled attempt was no longer current", "task_run_id", a.TaskRunID, "attempt", a.Attempt)
			return nil, nil
		}
		if fr.State.Type == domain.Cancelling || fr.State.Type.Terminal() {
			return domain.CancelTaskRun{}, nil
		}
		f := domain.AttemptFailure{Attempt: a.Attempt, Error: "the attempt was stopped", LogTail: out.logTail}
		return domain.FailTaskRun{AttemptFailure: f, Now: s.now, Random: rand.Float64()}, nil
	case out.failure != nil:
		f := *out.failure
		f.Attempt = a.Attempt
		return domain.FailTaskRun{AttemptFailure: f, Now: s.now, Random: rand.Float64()}, nil
	}
	return domain.CompleteTaskRun{Attempt: a.Attempt, Result: out.result, CacheKey: out.cacheKey}, nil
}

// decideStart decides the start of a job's attempt.
func (w *Worker) decideStart(ctx context.Context, tx pgx.Tx, s *settlement, op *taskOp, fr domain.FlowRun, tr domain.TaskRun, meta domain.Metadata, slots *queueSlots) (*startResult, error) {
	a := op.job.Args
	u := s.u
	resumed := false
	switch {
	case tr.State.Type == domain.Running && tr.Attempt == a.Attempt && op.retried:
		// An earlier commit of this very start went through but its answer
		// was lost: the job is still ours, run the attempt.
		resumed = true
	case tr.State.Type == domain.Running && tr.Attempt == a.Attempt && op.job.Attempt > 1:
		// River works this job again: the worker that started the attempt
		// did not record its outcome.
		return &startResult{action: actionRecover}, nil
	case a.Attempt != tr.Attempt+1 || (tr.State.Type != domain.Pending && tr.State.Type != domain.Scheduled):
		return &startResult{action: actionSkip, reason: fmt.Sprintf("task run is %s at attempt %d", tr.State.Type, tr.Attempt)}, nil
	case fr.State.Type.Terminal() || fr.State.Type == domain.Cancelling:
		return &startResult{action: actionSkip, reason: "flow run is " + string(fr.State.Type)}, nil
	}
	inputs := inputsOf(u, fr, tr)
	plan := execPlan{
		flowRunID: fr.ID, taskRunID: tr.ID, task: tr.Task, attempt: a.Attempt,
		params: domain.MergeParameters(fr.Parameters, tr.Task.Parameters), inputs: inputs,
	}
	if resumed {
		if tr.ChildFlowRunID != nil {
			// the sub-flow run was started by that commit, and the job
			// finished with it
			return &startResult{action: actionDone, reason: "sub-flow run already started"}, nil
		}
		plan.cacheKey, _ = domain.CacheKey(tr.Task, plan.params, inputs)
		slots.resume(op)
		return &startResult{action: actionRun, plan: plan}, nil
	}
	markStarted := func() error {
		if fr.State.Type == domain.Scheduled {
			if _, err := u.decideFlowRun(fr.ID, domain.MarkFlowRunPending{}, meta); err != nil {
				return err
			}
		}
		_, err := u.decideFlowRun(fr.ID, domain.MarkFlowRunStarted{}, meta)
		return err
	}

	if key, ok := domain.CacheKey(tr.Task, plan.params, inputs); ok {
		plan.cacheKey = key
		if !tr.Task.Cache.Refresh && tr.State.Type == domain.Pending {
			hit, found, err := lookupCache(ctx, tx, key)
			if err != nil {
				return nil, err
			}
			if found {
				if err := markStarted(); err != nil {
					return nil, err
				}
				cmd := domain.UseCachedResult{Result: hit.result, CacheKey: key, SourceTaskRunID: hit.taskRunID}
				if _, err := s.decide(tr.ID, cmd, meta); err != nil {
					return nil, err
				}
				return &startResult{action: actionDone, reason: "cached result of task run " + hit.taskRunID.String()}, nil
			}
		}
	}

	if tr.Task.Kind() == domain.TaskKindDeployment {
		return w.startChild(ctx, tx, s, plan, markStarted, meta)
	}
	if !slots.acquire(op) {
		return &startResult{action: actionWait, reason: "no free slot in work queue " + op.job.Queue}, nil
	}
	if _, err := u.decideTaskRun(tr.ID, domain.StartTaskRun{Attempt: a.Attempt, Worker: w.opts.Name}, meta); err != nil {
		return nil, err
	}
	if err := markStarted(); err != nil {
		return nil, err
	}
	return &startResult{action: actionRun, plan: plan}, nil
}

// inputsOf returns the results of the tasks tr depends on (loaded in u), by
// task name; a task that returned nothing gives null.
func inputsOf(u *unitOfWork, fr domain.FlowRun, tr domain.TaskRun) map[string]json.RawMessage {
	inputs := make(map[string]json.RawMessage, len(tr.Task.DependsOn))
	for _, dep := range tr.Task.DependsOn {
		res := u.taskRun(fr.TaskRunIDs[dep]).Result
		if len(res) == 0 {
			res = json.RawMessage("null")
		}
		inputs[dep] = res
	}
	return inputs
}
