package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/riverjob"
)

// engine is what every writer of task run outcomes shares: Attempts (a
// worker's starts and outcomes), the Service (cancel, retry) and Reaping
// (crashed attempts). Each decides in domain, and settles the consequences
// with a settlement in the same transaction.
type engine struct {
	store *eventstore.Store
	enq   Enqueuer
	cache *flowRunCache
	tasks *taskRunCache
}

func newEngine(store *eventstore.Store, enq Enqueuer) *engine {
	return &engine{store: store, enq: enq, cache: newFlowRunCache(1000), tasks: newTaskRunCache(20_000)}
}

// settlement collects what follows from task run events decided in one
// transaction, and applies it: task runs that will never run are cancelled,
// fan-in counts go down and ready task runs are queued, retries are queued,
// results are cached, progress rows count finished task runs, flow runs with
// none left end, and sub-flow runs that end report to their parent task run.
type settlement struct {
	e    *engine
	u    *unitOfWork
	meta domain.Metadata // the actor; correlation id and reason are set per event
	now  time.Time

	index     map[uuid.UUID]*flowIndex
	jobs      []jobRow
	laterAt   time.Time // the earliest job queued for later; zero when none
	progress  map[uuid.UUID]*runProgress
	decrement map[uuid.UUID]int32     // task run -> upstream tasks that completed
	decFlow   map[uuid.UUID]uuid.UUID // task run counted down -> its flow run
	notRun    map[uuid.UUID]string    // task run -> why it will never run
	notRunIDs []uuid.UUID
	cached    []cacheEntry
	refused   []refusal
	// finishedJobs are the River jobs (by id) of the attempts whose outcome
	// this transaction records. apply deletes them, in the statement that
	// updates the progress rows, rather than marking them completed: the
	// event log is the record of what an attempt did, the job was only its
	// place in the queue. So no job can be finished twice or lost, as with
	// River's JobCompleteTx, and a job's absence tells a commit retried
	// after a lost connection that its first try landed (committedEarlier).
	// A completed row would cost an entry in each of river_job's indexes,
	// River's completer would lock it again when Work returns (it now finds
	// nothing to do), and River's cleaner would delete it a day later;
	// deleting it at once is cheaper (docs/BENCHMARKS.md). A job that is no
	// longer running (the reaper took it back) is left as it is. River's
	// own UI therefore lists the task jobs that are queued, running,
	// cancelled or discarded, not those that finished; Ordo's views show
	// every attempt.
	finishedJobs []int64
	// deletedJobs are the jobs this transaction deletes as finished or as
	// handed to a new job: once it commits, River's completions of them
	// are left out (Committed.Deleted; jobs' worker pilot).
	deletedJobs []int64
	// wake are the queues that got jobs to work now.
	wake map[string]bool
}

// runProgress is what a transaction changes in one flow run's progress row.
type runProgress struct {
	done, failed, crashed, cancelled int32
	failure                          string
}

// refusal is a result that arrived for an attempt that is no longer current.
type refusal struct {
	taskRunID uuid.UUID
	event     domain.TaskRunResultRefused
}

func (e *engine) newSettlement(meta domain.Metadata) *settlement {
	u := newUnitOfWork(e.store)
	u.tasks = e.tasks
	return &settlement{
		e: e, u: u, meta: meta, now: time.Now(),
		index:     map[uuid.UUID]*flowIndex{},
		progress:  map[uuid.UUID]*runProgress{},
		decrement: map[uuid.UUID]int32{},
		decFlow:   map[uuid.UUID]uuid.UUID{},
		notRun:    map[uuid.UUID]string{},
	}
}

// metaFor is the settlement's metadata for events of a flow run's tree.
func (s *settlement) metaFor(flowRunID uuid.UUID, reason string) domain.Metadata {
	m := s.meta
	m.CorrelationID = flowRunID.String()
	if reason != "" {
		m.Reason = reason
	}
	return m
}

// loadFlowRun registers a flow run in the unit of work, as read by q, and
// returns it with its index.
func (s *settlement) loadFlowRun(ctx context.Context, q eventstore.Querier, id uuid.UUID) (domain.FlowRun, *flowIndex, error) {
	if fr, ok := s.u.flowRun(id); ok {
		return fr, s.index[id], nil
	}
	fr, ix, err := s.e.cache.load(ctx, s.e.store, q, id, s.u.epoch)
	if err != nil {
		return domain.FlowRun{}, nil, err
	}
	s.u.putFlowRun(fr)
	s.index[id] = ix
	return fr, ix, nil
}

// loadFlowRuns registers several flow runs, in one query; those that do
// not exist are left out.
func (s *settlement) loadFlowRuns(ctx context.Context, q eventstore.Querier, ids []uuid.UUID) error {
	var missing []uuid.UUID
	seen := map[uuid.UUID]bool{}
	for _, id := range ids {
		if _, ok := s.u.flowRun(id); !ok && !seen[id] {
			seen[id] = true
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	runs, err := s.e.cache.loadMany(ctx, s.e.store, q, missing, s.u.epoch)
	if err != nil {
		return err
	}
	for id, r := range runs {
		s.u.putFlowRun(r.run)
		s.index[id] = r.index
	}
	return nil
}

// loadRunsAndTasks registers flow runs and the task runs tasksOf names for
// each, reading them in one query when every flow run is cached (a flow
// run's tasks and their ids never change, so the cached state says which
// task runs to read; the query brings both up to date), else in two.
func (s *settlement) loadRunsAndTasks(ctx context.Context, q eventstore.Querier, flowIDs []uuid.UUID,
	tasksOf func(fr domain.FlowRun, ix *flowIndex) []uuid.UUID) error {
	var want, unique []uuid.UUID
	seen := map[uuid.UUID]bool{}
	for _, id := range flowIDs {
		if seen[id] {
			continue
		}
		seen[id] = true
		unique = append(unique, id)
		if _, ok := s.u.flowRun(id); !ok {
			want = append(want, id)
		}
	}
	flowIDs = unique
	snaps, all := s.e.cache.snapshot(want)
	if !all {
		if err := s.loadFlowRuns(ctx, q, want); err != nil {
			return err
		}
		var ids []uuid.UUID
		for _, id := range flowIDs {
			if fr, ok := s.u.flowRun(id); ok {
				ids = append(ids, tasksOf(fr, s.index[id])...)
			}
		}
		return s.u.loadTaskRuns(ctx, q, ids)
	}
	after := map[uuid.UUID]int64{}
	for id, snap := range snaps {
		after[id] = snap.run.Version
	}
	taskAfter := map[uuid.UUID]int64{}
	for _, id := range flowIDs {
		snap := snaps[id]
		if snap == nil {
			if fr, ok := s.u.flowRun(id); ok {
				s.u.prepareTaskRuns(tasksOf(fr, s.index[id]), taskAfter)
			}
			continue
		}
		s.u.prepareTaskRuns(tasksOf(snap.run, snap.index), taskAfter)
	}
	for id, v := range taskAfter {
		after[id] = v
	}
	envs, err := s.e.store.ReadStreamsAfter(ctx, q, after)
	if err != nil {
		return err
	}
	changed := map[uuid.UUID]bool{}
	for _, e := range envs {
		snap := snaps[e.StreamID]
		if snap == nil {
			continue
		}
		snap.run = snap.run.Apply(e.Event, e.RecordedAt)
		snap.run.Version = e.Version
		changed[e.StreamID] = true
	}
	for id, snap := range snaps {
		s.u.putFlowRun(snap.run)
		s.index[id] = snap.index
		if changed[id] {
			s.e.cache.put(snap.run, snap.index, s.u.epoch)
		}
	}
	return s.u.applyTaskEvents(envs, taskAfter)
}

// rememberFlowRuns keeps the flow runs' states, with the events this
// settlement appended, in the flow run cache: call it once the transaction
// committed, so that the next batch does not read those events back.
func (s *settlement) rememberFlowRuns() {
	for id, ent := range s.u.flowRuns {
		if ix := s.index[id]; ix != nil {
			s.e.cache.put(ent.run, ix, s.u.epoch)
		}
	}
}

func (s *settlement) prog(flowRunID uuid.UUID) *runProgress {
	p := s.progress[flowRunID]
	if p == nil {
		p = &runProgress{}
		s.progress[flowRunID] = p
	}
	return p
}

// decide decides cmd on a loaded task run (of a loaded flow run), records
// the events and notes what follows from them.
func (s *settlement) decide(taskRunID uuid.UUID, cmd domain.TaskRunCommand, meta domain.Metadata) ([]domain.Event, error) {
	events, err := s.u.decideTaskRun(taskRunID, cmd, meta)
	if err != nil {
		return nil, err
	}
	tr := s.u.taskRun(taskRunID)
	fr, ok := s.u.flowRun(tr.FlowRunID)
	if !ok {
		return nil, fmt.Errorf("task run %s decided without its flow run %s", taskRunID, tr.FlowRunID)
	}
	ix := s.index[fr.ID]
	name := ix.names[taskRunID]
	for _, e := range events {
		switch e := e.(type) {
		case domain.TaskRunCompleted:
			s.prog(fr.ID).done++
			s.countDown(fr, ix, name)
			if e.CacheKey != "" && tr.Task.Cache != nil {
				s.cached = append(s.cached, newCacheEntry(e.CacheKey, taskRunID, e, tr.Task.Cache, s.now))
			}
		case domain.TaskRunCached:
			s.prog(fr.ID).done++
			s.countDown(fr, ix, name)
		case domain.TaskRunRetryScheduled:
			if err := s.addJob(ix.job(fr, name, e.Attempt+1, e.RetryAt, s.now)); err != nil {
				return nil, err
			}
		case domain.TaskRunFailed:
			p := s.prog(fr.ID)
			p.done++
			what := "failed"
			if e.Crashed {
				p.crashed++
				what = "crashed"
			} else {
				p.failed++
			}
			if p.failure == "" {
				p.failure = fmt.Sprintf("task %s %s: %s", name, what, e.Error)
			}
			s.neverRun(fr, ix, name, "upstream task "+name+" "+what)
		case domain.TaskRunCancelled:
			p := s.prog(fr.ID)
			p.done++
			p.cancelled++
			if !e.NotRun {
				s.neverRun(fr, ix, name, "upstream task "+name+" was cancelled")
			}
		case domain.TaskRunResultRefused:
			s.refused = append(s.refused, refusal{taskRunID: taskRunID, event: e})
		}
	}
	return events, nil
}

// countDown notes that name completed: its downstream task runs wait for one
// task fewer.
func (s *settlement) countDown(fr domain.FlowRun, ix *flowIndex, name string) {
	for _, d := range ix.down[name] {
		s.decrement[fr.TaskRunIDs[d]]++
		s.decFlow[fr.TaskRunIDs[d]] = fr.ID
	}
}

// neverRun notes that every task downstream of name will never run.
func (s *settlement) neverRun(fr domain.FlowRun, ix *flowIndex, name, reason string) {
	for _, d := range ix.descendants(name) {
		id := fr.TaskRunIDs[d]
		if _, ok := s.notRun[id]; !ok {
			s.notRun[id] = reason
			s.notRunIDs = append(s.notRunIDs, id)
		}
	}
}

// settle applies what follows from the events decided so far, in as few
// statements as it can: the task runs that will never run are cancelled,
// the events are appended, results are cached, and then one statement counts
// down the fan-in rows and queues the task runs that became ready, queues
// the other jobs (retries), completes the River jobs whose outcome is
// recorded, and updates the progress rows (the hot row of each run, touched
// once). Flow runs with no unfinished task run left then end, which frees
// their deployment's concurrency slots and reports sub-flow runs to their
// parent task run.
func (s *settlement) settle(ctx context.Context, tx pgx.Tx) error {
	if len(s.notRunIDs) > 0 {
		claimed, err := claimCancellations(ctx, tx, s.notRunIDs)
		if err != nil {
			return err
		}
		s.notRunIDs = nil
		if err := s.u.loadTaskRuns(ctx, tx, claimed); err != nil {
			return err
		}
		for _, id := range claimed {
			tr := s.u.taskRun(id)
			if _, err := s.decide(id, domain.CancelTaskRun{NotRun: true}, s.metaFor(tr.FlowRunID, s.notRun[id])); err != nil {
				return err
			}
		}
	}
	if err := s.u.flush(ctx, tx); err != nil {
		return err
	}
	if len(s.cached) > 0 {
		if err := storeCacheEntries(ctx, tx, s.cached); err != nil {
			return err
		}
		s.cached = nil
	}
	finished, err := s.apply(ctx, tx)
	if err != nil {
		return err
	}
	if len(finished) == 0 {
		return nil
	}

	// Read what ending the runs needs, a query each: the runs, and the sink
	// task runs whose results make a completed run's result.
	ids := make([]uuid.UUID, len(finished))
	for i, f := range finished {
		ids[i] = f.flowRunID
	}
	if err := s.loadFlowRuns(ctx, tx, ids); err != nil {
		return err
	}
	var sinks []uuid.UUID
	for _, f := range finished {
		if fr, ok := s.u.flowRun(f.flowRunID); ok {
			for _, name := range s.index[fr.ID].sinks {
				sinks = append(sinks, fr.TaskRunIDs[name])
			}
		}
	}
	if err := s.u.loadTaskRuns(ctx, tx, sinks); err != nil {
		return err
	}
	var (
		children []domain.FlowRun
		ended    []uuid.UUID
	)
	for _, f := range finished {
		fr, err := s.finishRun(ctx, tx, f)
		if err != nil {
			return err
		}
		if !fr.State.Type.Terminal() {
			continue
		}
		ended = append(ended, fr.ID)
		if fr.ParentTaskRunID != nil {
			children = append(children, fr)
		}
	}
	if err := s.u.flush(ctx, tx); err != nil {
		return err
	}
	// Runs that ended free their deployment's concurrency slots.
	if _, err := ReleaseDeploymentSlots(ctx, tx, s.e.store, s.e.enq, ended, s.meta.Actor); err != nil {
		return err
	}
	for _, child := range children {
		if err := s.reportToParent(ctx, tx, child); err != nil {
			return err
		}
	}
	if len(s.jobs) > 0 {
		_, err = s.apply(ctx, tx)
	}
	return err
}

// jobRow is an ordo.task_run job to insert.
type jobRow struct {
	args  []byte
	queue string
	at    *time.Time // when it is due; nil means now
}

// rowOf turns a job into a row.
func rowOf(j riverjob.Job) (jobRow, error) {
	args, err := json.Marshal(j.Args)
	if err != nil {
		return jobRow{}, fmt.Errorf("encode job args: %w", err)
	}
	r := jobRow{args: args, queue: j.Queue}
	if r.queue == "" {
		r.queue = domain.DefaultWorkQueue
	}
	if !j.ScheduledAt.IsZero() {
		at := j.ScheduledAt
		r.at = &at
	}
	return r, nil
}

// addJob queues a job with the settlement's next statement.
func (s *settlement) addJob(j riverjob.Job) error {
	r, err := rowOf(j)
	if err != nil {
		return err
	}
	s.jobs = append(s.jobs, r)
	return nil
}

// applySQL is the one statement of settle; see apply. The fan-in rows, then
// the progress rows, are locked in id order, so that concurrent
// transactions cannot deadlock. The jobs of task runs that became ready and
// the other jobs are inserted together (riverjob.InsertSQL).
var applySQL = `
WITH d AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::jsonb[], $4::text[]) AS d(id, n, args, queue)
), locked_fanin AS (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM task_run_fanin WHERE task_run_id = ANY($1) ORDER BY task_run_id FOR UPDATE
    ) l
), counted AS (
    UPDATE task_run_fanin f SET remaining = f.remaining - d.n
    FROM d
    WHERE f.task_run_id = d.id AND (SELECT n FROM locked_fanin) >= 0
    RETURNING f.task_run_id, f.flow_run_id, f.remaining = 0 AND NOT f.cancelled AS ready
), queued AS (
    ` + riverjob.InsertSQL(`
        SELECT d.args, d.queue, now() AS at FROM counted JOIN d ON d.id = counted.task_run_id WHERE counted.ready
        UNION ALL
        SELECT j.args, j.queue, coalesce(j.at, now()) FROM unnest($5::jsonb[], $6::text[], $7::timestamptz[]) AS j(args, queue, at)`) + `
    RETURNING 1
), finished AS (
    ` + riverjob.DeleteRunningSQL(`$8::bigint[]`) + `
    RETURNING 1
), p AS (
    SELECT * FROM unnest($9::uuid[], $10::int[], $11::int[], $12::int[], $13::int[], $14::text[])
        AS p(id, done, failed, crashed, cancelled, failure)
), locked_progress AS (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM flow_run_progress
        WHERE flow_run_id = ANY($9) AND (SELECT count(*) FROM counted) >= 0
        ORDER BY flow_run_id FOR UPDATE
    ) l
), progressed AS (
    UPDATE flow_run_progress r
    SET task_runs_unfinished = r.task_runs_unfinished - p.done,
        task_runs_failed = r.task_runs_failed + p.failed,
        task_runs_crashed = r.task_runs_crashed + p.crashed,
        task_runs_cancelled = r.task_runs_cancelled + p.cancelled,
        failure = coalesce(r.failure, nullif(p.failure, '')),
        updated_at = now()
    FROM p
    WHERE r.flow_run_id = p.id AND (SELECT n FROM locked_progress) >= 0
    RETURNING r.flow_run_id, r.task_runs_unfinished, r.task_runs_failed, r.task_runs_crashed, r.task_runs_cancelled, coalesce(r.failure, '') AS failure
)
SELECT true, task_run_id, ready, 0, 0, 0, 0, '' FROM counted
UNION ALL
SELECT false, flow_run_id, false, task_runs_unfinished, task_runs_failed, task_runs_crashed, task_runs_cancelled, failure FROM progressed
UNION ALL
SELECT false, NULL, false, (SELECT count(*) FROM queued)::int, (SELECT count(*) FROM finished)::int, 0, 0, ''`

// apply runs applySQL with the fan-in countdowns, jobs, job completions and
// progress collected so far, and returns the flow runs that have no
// unfinished task run left.
func (s *settlement) apply(ctx context.Context, tx pgx.Tx) ([]finishedRun, error) {
	// Each task run counted down gets the job it needs if it becomes ready.
	// In a run that was retried it may have had attempts already: its job
	// is the attempt after them.
	var again []uuid.UUID
	for id := range s.decrement {
		if fr, _ := s.u.flowRun(s.decFlow[id]); fr.RunCount > 1 {
			again = append(again, id)
		}
	}
	if err := s.u.loadTaskRuns(ctx, tx, again); err != nil {
		return nil, err
	}
	var (
		decIDs    = make([]uuid.UUID, 0, len(s.decrement))
		decN      = make([]int32, 0, len(s.decrement))
		decArgs   = make([][]byte, 0, len(s.decrement))
		decQueues = make([]string, 0, len(s.decrement))
		readyWake = map[uuid.UUID]string{}
	)
	for id, n := range s.decrement {
		frID := s.decFlow[id]
		fr, _ := s.u.flowRun(frID)
		attempt := 1
		if fr.RunCount > 1 {
			attempt = s.u.taskRun(id).Attempt + 1
		}
		ix := s.index[frID]
		r, err := rowOf(ix.job(fr, ix.names[id], attempt, s.now, s.now))
		if err != nil {
			return nil, err
		}
		decIDs, decN, decArgs, decQueues = append(decIDs, id), append(decN, n), append(decArgs, r.args), append(decQueues, r.queue)
		readyWake[id] = r.queue
	}
	var (
		jobArgs   = make([][]byte, len(s.jobs))
		jobQueues = make([]string, len(s.jobs))
		jobAt     = make([]*time.Time, len(s.jobs))
		laterAt   time.Time
	)
	for i, j := range s.jobs {
		jobArgs[i], jobQueues[i], jobAt[i] = j.args, j.queue, j.at
		if j.at == nil || !j.at.After(s.now) {
			s.wakeQueue(j.queue)
		} else if laterAt.IsZero() || j.at.Before(laterAt) {
			laterAt = *j.at
		}
	}
	var (
		progIDs                          []uuid.UUID
		done, failed, crashed, cancelled []int32
		failures                         []string
	)
	for id, p := range s.progress {
		if p.done == 0 {
			continue
		}
		progIDs = append(progIDs, id)
		done, failed, crashed, cancelled = append(done, p.done), append(failed, p.failed), append(crashed, p.crashed), append(cancelled, p.cancelled)
		failures = append(failures, p.failure)
	}
	if len(decIDs) == 0 && len(jobArgs) == 0 && len(s.finishedJobs) == 0 && len(progIDs) == 0 {
		return nil, nil
	}
	rows, err := tx.Query(ctx, applySQL,
		rawIDs(decIDs), decN, decArgs, decQueues,
		jobArgs, jobQueues, jobAt,
		s.finishedJobs,
		rawIDs(progIDs), done, failed, crashed, cancelled, failures)
	if err != nil {
		return nil, fmt.Errorf("settle task runs: %w", err)
	}
	var finished []finishedRun
	for rows.Next() {
		var (
			counted    bool
			id         *uuid.UUID
			ready      bool
			unfinished int32
			f          finishedRun
		)
		if err := rows.Scan(&counted, &id, &ready, &unfinished, &f.failed, &f.crashed, &f.cancelled, &f.failure); err != nil {
			rows.Close()
			return nil, fmt.Errorf("settle task runs: %w", err)
		}
		switch {
		case counted && ready:
			s.wakeQueue(readyWake[*id])
		case !counted && id != nil && unfinished == 0:
			f.flowRunID = *id
			finished = append(finished, f)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("settle task runs: %w", err)
	}
	if !laterAt.IsZero() {
		if s.laterAt.IsZero() || laterAt.Before(s.laterAt) {
			s.laterAt = laterAt
		}
		if err := riverjob.NotifyDueTx(ctx, tx, laterAt); err != nil {
			return nil, err
		}
	}
	s.decrement = map[uuid.UUID]int32{}
	s.jobs = nil
	s.finishedJobs = nil
	s.progress = map[uuid.UUID]*runProgress{}
	slices.SortFunc(finished, func(a, b finishedRun) int { return slices.Compare(a.flowRunID[:], b.flowRunID[:]) })
	return finished, nil
}

func (s *settlement) wakeQueue(q string) {
	if s.wake == nil {
		s.wake = map[string]bool{}
	}
	s.wake[q] = true
}

type finishedRun struct {
	flowRunID                  uuid.UUID
	failed, crashed, cancelled int32
	failure                    string
}

// finishRun ends a run whose task runs have all finished: FAILED when one
// failed for good, else CRASHED when one crashed for good, else CANCELLED
// when it was being cancelled, else COMPLETED with the results of its sink
// tasks.
func (s *settlement) finishRun(ctx context.Context, tx pgx.Tx, f finishedRun) (domain.FlowRun, error) {
	fr, ix, err := s.loadFlowRun(ctx, tx, f.flowRunID)
	if err != nil {
		return domain.FlowRun{}, err
	}
	var cmd domain.FinishFlowRun
	switch {
	case f.failed > 0 || f.crashed > 0:
		cmd = domain.FinishFlowRun{Outcome: domain.Failed, Message: f.failure}
		if f.failed == 0 {
			cmd.Outcome = domain.Crashed
		}
		if n := f.failed + f.crashed; n > 1 {
			cmd.Message = fmt.Sprintf("%s (and %d more task runs did not complete)", f.failure, n-1)
		}
	case fr.State.Type == domain.Cancelling || f.cancelled > 0:
		cmd = domain.FinishFlowRun{Outcome: domain.Cancelled}
	default:
		ids := make([]uuid.UUID, len(ix.sinks))
		for i, name := range ix.sinks {
			ids[i] = fr.TaskRunIDs[name]
		}
		if err := s.u.loadTaskRuns(ctx, tx, ids); err != nil {
			return domain.FlowRun{}, err
		}
		result, err := sinkResult(ix.sinks, func(name string) json.RawMessage { return s.u.taskRun(fr.TaskRunIDs[name]).Result })
		if err != nil {
			return domain.FlowRun{}, err
		}
		cmd = domain.FinishFlowRun{Outcome: domain.Completed, Result: result}
	}
	if _, err := s.u.decideFlowRun(fr.ID, cmd, s.metaFor(fr.ID, "")); err != nil {
		return domain.FlowRun{}, err
	}
	fr, _ = s.u.flowRun(fr.ID)
	return fr, nil
}

// reportToParent queues the job that settles the parent task run of a
// sub-flow run that ended, in the parent task's queue.
func (s *settlement) reportToParent(ctx context.Context, tx pgx.Tx, child domain.FlowRun) error {
	parent, _, err := s.loadFlowRun(ctx, tx, *child.ParentFlowRunID)
	if err != nil {
		return fmt.Errorf("parent of sub-flow run %s: %w", child.ID, err)
	}
	if err := s.u.loadTaskRuns(ctx, tx, []uuid.UUID{*child.ParentTaskRunID}); err != nil {
		return err
	}
	tr := s.u.taskRun(*child.ParentTaskRunID)
	if tr.State.Type != domain.Running || tr.ChildFlowRunID == nil || *tr.ChildFlowRunID != child.ID {
		return nil // the parent moved on (its attempt was crashed or cancelled)
	}
	ix := s.index[parent.ID]
	job := ix.job(parent, ix.names[tr.ID], tr.Attempt, s.now, s.now)
	job.Args.ChildFlowRunID = child.ID
	return s.addJob(job)
}

// sinkResult is a flow run's result: the result of its only sink task, or
// an object of sink task name -> result when it has several. The object is
// written by hand, keys in order: encoding/json would sort and check every
// sink's result again, in the transaction that ends the run.
func sinkResult(sinks []string, result func(string) json.RawMessage) (json.RawMessage, error) {
	if len(sinks) == 1 {
		return result(sinks[0]), nil
	}
	names := slices.Sorted(slices.Values(sinks))
	b := make([]byte, 0, 2+len(names)*16)
	b = append(b, '{')
	for i, name := range names {
		if i > 0 {
			b = append(b, ',')
		}
		key, err := json.Marshal(name)
		if err != nil {
			return nil, fmt.Errorf("encode flow run result: %w", err)
		}
		b = append(append(b, key...), ':')
		if r := result(name); len(r) > 0 {
			b = append(b, r...)
		} else {
			b = append(b, "null"...)
		}
	}
	b = append(b, '}')
	if !json.Valid(b) {
		return nil, fmt.Errorf("encode flow run result: the result of a sink task is not JSON")
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
RETURNING task_run_id`, rawIDs(ids))
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

// rawIDs turns ids into what pgx encodes as uuid[] without formatting each
// one as text.
func rawIDs(ids []uuid.UUID) [][16]byte {
	out := make([][16]byte, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// wakeAfterCommit notifies the queues a committed settlement queued jobs in
// now; a failure only delays the jobs until the workers' next poll.
func wakeAfterCommit(ctx context.Context, q eventstore.Querier, s *settlement, logger *slog.Logger) {
	if s == nil || len(s.wake) == 0 {
		return
	}
	if err := riverjob.NotifyInsert(context.WithoutCancel(ctx), q, slices.Sorted(maps.Keys(s.wake))); err != nil {
		logger.Debug("wake queues", "err", err)
	}
}
