package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/ordoflow/ordo/domain"
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
	ctx     context.Context // the job's work context: JobCompleteTx finds the client in it
	job     *river.Job[TaskRunArgs]
	outcome outcome      // opFinish
	res     *startResult // opStart: set by the batch that committed
}

type startAction int

const (
	actionRun     startAction = iota // run the attempt in res.plan
	actionSkip                       // nothing to do: a stale or duplicate job
	actionRecover                    // the attempt was started by a worker that died: record it as crashed
)

type startResult struct {
	action startAction
	reason string
	plan   execPlan
}

// runProgress is what a batch changes in one flow run's progress row.
type runProgress struct {
	done, failed int32
	failure      string
}

// commitBatch records a batch of starts or outcomes in one transaction.
func (w *Worker) commitBatch(ctx context.Context, ops []*taskOp) error {
	var wake bool
	err := w.store.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		wake, err = w.decideBatch(ctx, tx, ops)
		return err
	})
	if err == nil && wake && w.due != nil {
		w.due.Wake()
	}
	return err
}

// decideBatch does the work of commitBatch within tx. It reports whether
// it queued jobs for later.
func (w *Worker) decideBatch(ctx context.Context, tx pgx.Tx, ops []*taskOp) (bool, error) {
	now := time.Now()
	u := newUnitOfWork(w.store)
	index := map[uuid.UUID]*flowIndex{}
	missing := map[uuid.UUID]bool{}

	// Load every flow run and task run the batch needs.
	var ids []uuid.UUID
	for _, op := range ops {
		a := op.job.Args
		if _, ok := u.flowRun(a.FlowRunID); !ok && !missing[a.FlowRunID] {
			fr, ix, err := w.cache.load(ctx, w.store, tx, a.FlowRunID)
			if domain.ErrorCode(err) == domain.CodeNotFound {
				missing[a.FlowRunID] = true
				continue
			}
			if err != nil {
				return false, err
			}
			u.putFlowRun(fr)
			index[fr.ID] = ix
		}
		ids = append(ids, a.TaskRunID)
		if op.kind == opStart {
			fr, _ := u.flowRun(a.FlowRunID)
			if t, ok := fr.Flow.Task(index[a.FlowRunID].names[a.TaskRunID]); ok {
				for _, dep := range t.DependsOn {
					ids = append(ids, fr.TaskRunIDs[dep])
				}
			}
		}
	}
	if err := u.loadTaskRuns(ctx, tx, ids); err != nil {
		return false, err
	}

	var (
		jobs      []river.InsertManyParams
		later     bool
		completed []*taskOp
		progress  = map[uuid.UUID]*runProgress{}
		decrement = map[uuid.UUID]int32{}
		failedBy  = map[uuid.UUID]string{} // task run to cancel -> the failed task
		cancelIDs []uuid.UUID
	)
	prog := func(id uuid.UUID) *runProgress {
		if progress[id] == nil {
			progress[id] = &runProgress{}
		}
		return progress[id]
	}
	for _, op := range ops {
		a := op.job.Args
		meta := w.meta
		meta.CorrelationID = a.FlowRunID.String()
		if missing[a.FlowRunID] {
			if op.kind == opStart {
				op.res = &startResult{action: actionSkip, reason: "flow run not found"}
			} else {
				completed = append(completed, op)
			}
			continue
		}
		fr, _ := u.flowRun(a.FlowRunID)
		ix := index[a.FlowRunID]
		tr := u.taskRun(a.TaskRunID)
		if tr.State.IsZero() {
			if op.kind == opStart {
				op.res = &startResult{action: actionSkip, reason: "task run not found"}
			} else {
				completed = append(completed, op)
			}
			continue
		}
		if op.kind == opStart {
			res, err := w.decideStart(u, op, fr, tr, meta)
			if err != nil {
				return false, err
			}
			op.res = res
			continue
		}

		var cmd domain.TaskRunCommand
		if f := op.outcome.failure; f != nil {
			f.Attempt = a.Attempt
			cmd = domain.FailTaskRun{AttemptFailure: *f, Now: now, Random: rand.Float64()}
		} else {
			cmd = domain.CompleteTaskRun{Attempt: a.Attempt, Result: op.outcome.result}
		}
		events, err := u.decideTaskRun(a.TaskRunID, cmd, meta)
		if err != nil {
			return false, err
		}
		name := ix.names[a.TaskRunID]
		for _, e := range events {
			switch e := e.(type) {
			case domain.TaskRunCompleted:
				prog(fr.ID).done++
				for _, d := range ix.down[name] {
					decrement[fr.TaskRunIDs[d]]++
				}
			case domain.TaskRunRetryScheduled:
				jobs = append(jobs, taskJob(fr, name, a.Attempt+1, e.RetryAt, now))
				later = later || e.RetryAt.After(now)
			case domain.TaskRunFailed:
				p := prog(fr.ID)
				p.done++
				p.failed++
				if p.failure == "" {
					p.failure = fmt.Sprintf("task %s failed: %s", name, e.Error)
				}
				for _, d := range ix.descendants(name) {
					id := fr.TaskRunIDs[d]
					if _, ok := failedBy[id]; !ok {
						failedBy[id] = name
						cancelIDs = append(cancelIDs, id)
					}
				}
			}
		}
		completed = append(completed, op)
	}

	// Task runs downstream of a task that failed for good will never run.
	if len(cancelIDs) > 0 {
		claimed, err := claimCancellations(ctx, tx, cancelIDs)
		if err != nil {
			return false, err
		}
		if err := u.loadTaskRuns(ctx, tx, claimed); err != nil {
			return false, err
		}
		for _, id := range claimed {
			tr := u.taskRun(id)
			meta := w.meta
			meta.CorrelationID = tr.FlowRunID.String()
			meta.Reason = "upstream task " + failedBy[id] + " failed"
			events, err := u.decideTaskRun(id, domain.CancelTaskRun{NotRun: true}, meta)
			if err != nil {
				return false, err
			}
			if len(events) > 0 {
				prog(tr.FlowRunID).done++
			}
		}
	}

	if _, err := u.flush(ctx, tx); err != nil {
		return false, err
	}

	// Fan-in: queue the downstream task runs whose last upstream completed.
	if len(decrement) > 0 {
		ready, err := decrementFanin(ctx, tx, decrement)
		if err != nil {
			return false, err
		}
		for _, r := range ready {
			fr, _ := u.flowRun(r.flowRunID)
			jobs = append(jobs, taskJob(fr, index[r.flowRunID].names[r.taskRunID], 1, now, now))
		}
	}
	if len(jobs) > 0 {
		if _, err := w.client.InsertManyFastTx(ctx, tx, jobs); err != nil {
			return false, fmt.Errorf("queue task runs: %w", err)
		}
	}
	for _, op := range completed {
		if _, err := river.JobCompleteTx[*riverpgxv5.Driver](context.WithoutCancel(op.ctx), tx, op.job); err != nil {
			return false, fmt.Errorf("complete job %d: %w", op.job.ID, err)
		}
	}

	// The run's progress row is hot: touch it last, once per run.
	if len(progress) > 0 {
		finished, err := updateProgress(ctx, tx, progress)
		if err != nil {
			return false, err
		}
		for _, f := range finished {
			if err := w.finishFlowRun(ctx, tx, u, index[f.flowRunID], f); err != nil {
				return false, err
			}
		}
		if _, err := u.flush(ctx, tx); err != nil {
			return false, err
		}
	}
	return later, nil
}

// decideStart decides the start of a job's attempt.
func (w *Worker) decideStart(u *unitOfWork, op *taskOp, fr domain.FlowRun, tr domain.TaskRun, meta domain.Metadata) (*startResult, error) {
	a := op.job.Args
	switch {
	case tr.State.Type == domain.Running && tr.Attempt == a.Attempt && op.job.Attempt > 1:
		// River works this job again: the worker that started the attempt
		// did not record its outcome.
		return &startResult{action: actionRecover}, nil
	case a.Attempt != tr.Attempt+1 || (tr.State.Type != domain.Pending && tr.State.Type != domain.Scheduled):
		return &startResult{action: actionSkip, reason: fmt.Sprintf("task run is %s at attempt %d", tr.State.Type, tr.Attempt)}, nil
	case fr.State.Type.Terminal() || fr.State.Type == domain.Cancelling:
		return &startResult{action: actionSkip, reason: "flow run is " + string(fr.State.Type)}, nil
	}
	if _, err := u.decideTaskRun(tr.ID, domain.StartTaskRun{Attempt: a.Attempt, Worker: w.opts.Name}, meta); err != nil {
		return nil, err
	}
	if fr.State.Type == domain.Scheduled {
		if _, err := u.decideFlowRun(fr.ID, domain.MarkFlowRunPending{}, meta); err != nil {
			return nil, err
		}
	}
	if _, err := u.decideFlowRun(fr.ID, domain.MarkFlowRunStarted{}, meta); err != nil {
		return nil, err
	}
	inputs := make(map[string]json.RawMessage, len(tr.Task.DependsOn))
	for _, dep := range tr.Task.DependsOn {
		res := u.taskRun(fr.TaskRunIDs[dep]).Result
		if len(res) == 0 {
			res = json.RawMessage("null")
		}
		inputs[dep] = res
	}
	return &startResult{action: actionRun, plan: execPlan{
		flowRunID: fr.ID, taskRunID: tr.ID, task: tr.Task, attempt: a.Attempt,
		params: domain.MergeParameters(fr.Parameters, tr.Task.Parameters), inputs: inputs,
	}}, nil
}

type finishedRun struct {
	flowRunID uuid.UUID
	failed    int32
	failure   string
}

// finishFlowRun ends a run whose task runs have all finished: COMPLETED with
// the results of its sink tasks, or FAILED.
func (w *Worker) finishFlowRun(ctx context.Context, tx pgx.Tx, u *unitOfWork, ix *flowIndex, f finishedRun) error {
	fr, ok := u.flowRun(f.flowRunID)
	if !ok {
		return fmt.Errorf("flow run %s finished but was not loaded", f.flowRunID)
	}
	meta := w.meta
	meta.CorrelationID = fr.ID.String()
	cmd := domain.FinishFlowRun{Outcome: domain.Failed, Message: f.failure}
	if f.failed > 1 {
		cmd.Message = fmt.Sprintf("%s (and %d more task runs failed)", f.failure, f.failed-1)
	}
	if f.failed == 0 {
		ids := make([]uuid.UUID, len(ix.sinks))
		for i, s := range ix.sinks {
			ids[i] = fr.TaskRunIDs[s]
		}
		if err := u.loadTaskRuns(ctx, tx, ids); err != nil {
			return err
		}
		result, err := sinkResult(ix.sinks, func(name string) json.RawMessage { return u.taskRun(fr.TaskRunIDs[name]).Result })
		if err != nil {
			return err
		}
		cmd = domain.FinishFlowRun{Outcome: domain.Completed, Result: result}
	}
	_, err := u.decideFlowRun(fr.ID, cmd, meta)
	return err
}

// sinkResult is a flow run's result: the result of its only sink task, or
// an object of sink task name -> result when it has several.
func sinkResult(sinks []string, result func(string) json.RawMessage) (json.RawMessage, error) {
	if len(sinks) == 1 {
		return result(sinks[0]), nil
	}
	m := make(map[string]json.RawMessage, len(sinks))
	for _, s := range sinks {
		r := result(s)
		if len(r) == 0 {
			r = json.RawMessage("null")
		}
		m[s] = r
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode flow run result: %w", err)
	}
	return b, nil
}

// claimCancellations marks not-yet-queued task runs as cancelled in the
// fan-in table and returns those this transaction claimed; a concurrent
// transaction claiming the same rows waits and then gets none of them.
func claimCancellations(ctx context.Context, tx pgx.Tx, ids []uuid.UUID) ([]uuid.UUID, error) {
	rows, err := tx.Query(ctx, `
WITH locked AS (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM task_run_fanin WHERE task_run_id = ANY($1) ORDER BY task_run_id FOR UPDATE
    ) l
)
UPDATE task_run_fanin SET cancelled = true
WHERE task_run_id = ANY($1) AND NOT cancelled AND remaining > 0 AND (SELECT n FROM locked) >= 0
RETURNING task_run_id`, ids)
	if err != nil {
		return nil, fmt.Errorf("cancel downstream task runs: %w", err)
	}
	claimed, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("cancel downstream task runs: %w", err)
	}
	slices.SortFunc(claimed, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	return claimed, nil
}

type readyTaskRun struct{ taskRunID, flowRunID uuid.UUID }

// decrementFanin lowers the remaining upstream counts in one statement,
// locking the rows in id order so that concurrent batches cannot deadlock,
// and returns the task runs that became ready.
func decrementFanin(ctx context.Context, tx pgx.Tx, dec map[uuid.UUID]int32) ([]readyTaskRun, error) {
	ids := make([]uuid.UUID, 0, len(dec))
	ns := make([]int32, 0, len(dec))
	for id, n := range dec {
		ids = append(ids, id)
		ns = append(ns, n)
	}
	rows, err := tx.Query(ctx, `
WITH d AS (
    SELECT * FROM unnest($1::uuid[], $2::int[]) AS d(id, n)
), locked AS (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM task_run_fanin WHERE task_run_id = ANY($1) ORDER BY task_run_id FOR UPDATE
    ) l
)
UPDATE task_run_fanin f SET remaining = f.remaining - d.n
FROM d
WHERE f.task_run_id = d.id AND (SELECT n FROM locked) >= 0
RETURNING f.task_run_id, f.flow_run_id, f.remaining = 0 AND NOT f.cancelled`, ids, ns)
	if err != nil {
		return nil, fmt.Errorf("count down fan-in: %w", err)
	}
	var ready []readyTaskRun
	for rows.Next() {
		var r readyTaskRun
		var ok bool
		if err := rows.Scan(&r.taskRunID, &r.flowRunID, &ok); err != nil {
			rows.Close()
			return nil, fmt.Errorf("count down fan-in: %w", err)
		}
		if ok {
			ready = append(ready, r)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count down fan-in: %w", err)
	}
	return ready, nil
}

// updateProgress applies a batch's finished task runs to their flow runs'
// progress rows, in flow run id order, and returns the runs that have no
// unfinished task run left.
func updateProgress(ctx context.Context, tx pgx.Tx, progress map[uuid.UUID]*runProgress) ([]finishedRun, error) {
	var (
		ids      []uuid.UUID
		done     []int32
		failed   []int32
		failures []string
	)
	for id, p := range progress {
		if p.done == 0 {
			continue
		}
		ids = append(ids, id)
		done = append(done, p.done)
		failed = append(failed, p.failed)
		failures = append(failures, p.failure)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := tx.Query(ctx, `
WITH p AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::text[]) AS p(id, done, failed, failure)
), locked AS (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM flow_run_progress WHERE flow_run_id = ANY($1) ORDER BY flow_run_id FOR UPDATE
    ) l
)
UPDATE flow_run_progress r
SET task_runs_unfinished = r.task_runs_unfinished - p.done,
    task_runs_failed = r.task_runs_failed + p.failed,
    failure = coalesce(r.failure, nullif(p.failure, '')),
    updated_at = now()
FROM p
WHERE r.flow_run_id = p.id AND (SELECT n FROM locked) >= 0
RETURNING r.flow_run_id, r.task_runs_unfinished, r.task_runs_failed, coalesce(r.failure, '')`, ids, done, failed, failures)
	if err != nil {
		return nil, fmt.Errorf("update flow run progress: %w", err)
	}
	var finished []finishedRun
	for rows.Next() {
		var (
			f          finishedRun
			unfinished int32
		)
		if err := rows.Scan(&f.flowRunID, &unfinished, &f.failed, &f.failure); err != nil {
			rows.Close()
			return nil, fmt.Errorf("update flow run progress: %w", err)
		}
		if unfinished == 0 {
			finished = append(finished, f)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("update flow run progress: %w", err)
	}
	return finished, nil
}
