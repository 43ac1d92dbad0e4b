package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/riverjob"
)

// OpKind says what an Op records.
type OpKind int

const (
	OpStart  OpKind = iota // start the job's attempt
	OpFinish               // record the job's outcome and end the job
)

// Op is one item of a batch: a task run job starting or finishing.
type Op struct {
	Kind       OpKind
	JobID      int64
	Queue      string
	Args       riverjob.TaskRunArgs
	JobAttempt int // River's attempt of the job: above 1 when River works it again

	Outcome Outcome      // OpFinish
	Result  *StartResult // OpStart: set by the batch that committed
	// Retried is set when an earlier commit of this op failed in a way that
	// leaves unknown whether it committed (the connection broke).
	Retried bool
	// Slot is set on an outcome whose start took a slot of its work queue's
	// concurrency limit, which the outcome frees.
	Slot bool
	// Early is set on an outcome recorded after its job returned to River,
	// whose completion of the job was left out before.
	Early bool
}

// Outcome is how an attempt ended: a result, a failure, or cancelled.
type Outcome struct {
	Result    json.RawMessage
	Failure   *domain.AttemptFailure
	Cancelled bool     // its flow run was cancelled and the attempt was stopped
	LogTail   []string // the last log lines, for a cancelled attempt
	CacheKey  string
	// Outputs are the files a successful attempt stored in the blob store
	// (wholly stored before the outcome is recorded); Metrics its metrics.
	Outputs []domain.Output
	Metrics map[string]float64
}

// Action is what a worker does with a job once its start is decided.
type Action int

const (
	ActionRun     Action = iota // run the attempt in Result.Plan
	ActionSkip                  // nothing to do: a stale or duplicate job
	ActionRecover               // the attempt was started by a worker that died: record it as crashed
	ActionDone                  // settled within the start: a cache hit, or a sub-flow run started
	ActionWait                  // no slot of the queue's concurrency limit free: the job waits for one
)

// StartResult is how a start was decided.
type StartResult struct {
	Action Action
	Reason string
	Plan   Plan
	Slot   bool // the attempt holds a slot of its queue's concurrency limit
}

// Plan is one attempt to run, as decided when it started.
type Plan struct {
	FlowRunID uuid.UUID
	TaskRunID uuid.UUID
	Task      domain.TaskSpec
	Attempt   int
	Params    map[string]any
	Inputs    map[string]json.RawMessage
	// InputFiles are the outputs of the tasks it depends on, by task name
	// (those that left none are absent).
	InputFiles map[string][]domain.Output
	CacheKey   string                 // the key its result is cached under, if the task is cached
	Fail       *domain.AttemptFailure // set when the attempt fails before anything runs
}

// Attempts records the starts and outcomes of one worker's task run jobs,
// many in one transaction (CommitBatch).
type Attempts struct {
	store *eventstore.Store
	enq   Enqueuer
	eng   *engine
	meta  domain.Metadata
	opts  AttemptsOptions
}

// AttemptsOptions describe the worker whose attempts are recorded.
type AttemptsOptions struct {
	Worker   string    // its name, recorded in TaskRunStarted
	WorkerID uuid.UUID // its id in the workers table, on the slots it holds
	Logger   *slog.Logger
	// SlotRecheck, when set, is how long an attempt waits for a slot of its
	// queue's concurrency limit before looking again (tests).
	SlotRecheck time.Duration
}

// NewAttempts returns the recorder of a worker's attempts; enq inserts jobs.
func NewAttempts(store *eventstore.Store, enq Enqueuer, opts AttemptsOptions) *Attempts {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Attempts{store: store, enq: enq, eng: newEngine(store, enq), meta: domain.Metadata{Actor: "worker:" + opts.Worker}, opts: opts}
}

// Committed is what a committed batch leaves for the worker to do.
type Committed struct {
	// Deleted are the jobs the batch deleted (as finished, or handed to a
	// new job) whose completion River is still to send.
	Deleted []int64
	// Wake are the queues that got jobs to work now.
	Wake map[string]bool
	// DueAt is when the earliest job queued for later is due; zero when
	// none was.
	DueAt time.Time
}

// CommitBatch records a batch of starts or outcomes in one transaction.
// Each task run is first taken as the cache has it; when a cached state
// was out of date (another process wrote to it), the batch is decided
// again on what the log says.
func (r *Attempts) CommitBatch(ctx context.Context, ops []*Op) (Committed, error) {
	var s *settlement
	err := retryTxN(ctx, r.store, 2, func(tx pgx.Tx, try int) error {
		s = r.eng.newSettlement(r.meta)
		return r.decideBatch(ctx, tx, s, ops, try == 0)
	})
	if err != nil {
		return Committed{}, err
	}
	s.u.remember()
	s.rememberFlowRuns()
	for _, ref := range s.refused {
		r.opts.Logger.Warn("result of an attempt that is no longer current refused",
			"task_run_id", ref.taskRunID, "attempt", ref.event.Attempt, "current_attempt", ref.event.CurrentAttempt, "outcome", ref.event.Outcome)
	}
	return Committed{Deleted: notEarly(s.deletedJobs, ops), Wake: s.wake, DueAt: s.laterAt}, nil
}

// notEarly returns the deleted jobs but those of early outcomes, whose
// completion River was told to leave out before.
func notEarly(deleted []int64, ops []*Op) []int64 {
	early := map[int64]bool{}
	for _, op := range ops {
		if op.Early {
			early[op.JobID] = true
		}
	}
	if len(early) == 0 {
		return deleted
	}
	return slices.DeleteFunc(slices.Clone(deleted), func(id int64) bool { return early[id] })
}

// decideBatch does the work of CommitBatch within tx. With trust, the task
// run of each job is taken as the worker's cache has it (or as created,
// when the cache does not have it) instead of read: the append of the
// events decided on it fails when the stream moved on, and a task run that
// gets no event is read before the commit (unitOfWork.verify).
func (r *Attempts) decideBatch(ctx context.Context, tx pgx.Tx, s *settlement, ops []*Op, trust bool) error {
	missing, err := loadBatch(ctx, tx, s, ops, trust)
	if err != nil {
		return err
	}
	landed, err := committedEarlier(ctx, tx, ops)
	if err != nil {
		return err
	}
	slots, err := r.lockQueueSlots(ctx, tx, ops, func(id uuid.UUID) time.Time {
		fr, _ := s.u.flowRun(id)
		return fr.ScheduledAt
	})
	if err != nil {
		return err
	}
	var finished []*Op // ops whose job this transaction finishes
	for _, op := range ops {
		ends, err := r.decideOp(ctx, tx, s, op, missing[op.Args.FlowRunID], landed[op.JobID], slots)
		if err != nil {
			return err
		}
		if ends {
			finished = append(finished, op)
		}
	}
	if err := s.u.verify(ctx, tx); err != nil {
		return err
	}
	endJobs(s, ops, finished)
	if err := s.settle(ctx, tx); err != nil {
		return err
	}
	return slots.apply(ctx, tx, s)
}

// loadBatch loads every flow run and task run a batch needs: the task run
// of each job and, for starts, those it depends on (its inputs). It returns
// the flow runs of the batch that do not exist.
func loadBatch(ctx context.Context, tx pgx.Tx, s *settlement, ops []*Op, trust bool) (map[uuid.UUID]bool, error) {
	u := s.u
	if trust {
		u.trusted = make(map[uuid.UUID]bool, len(ops))
		for _, op := range ops {
			u.trusted[op.Args.TaskRunID] = true
		}
	}
	runIDs := make([]uuid.UUID, 0, len(ops))
	byRun := map[uuid.UUID][]*Op{}
	for _, op := range ops {
		a := op.Args
		runIDs = append(runIDs, a.FlowRunID)
		byRun[a.FlowRunID] = append(byRun[a.FlowRunID], op)
		if a.ChildFlowRunID != uuid.Nil {
			runIDs = append(runIDs, a.ChildFlowRunID)
		}
	}
	err := s.loadRunsAndTasks(ctx, tx, runIDs, func(fr domain.FlowRun, ix *flowIndex) []uuid.UUID {
		var ids, inputs []uuid.UUID
		for _, op := range byRun[fr.ID] {
			a := op.Args
			ids = append(ids, a.TaskRunID)
			if op.Kind == OpStart || a.ChildFlowRunID != uuid.Nil {
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
		return nil, err
	}
	missing := map[uuid.UUID]bool{}
	for _, op := range ops {
		if _, ok := u.flowRun(op.Args.FlowRunID); !ok {
			missing[op.Args.FlowRunID] = true
		}
	}
	return missing, nil
}

// decideOp decides one op of a batch (its flow run missing, or its job
// ended by an earlier commit whose answer was lost: landed) and reports
// whether the transaction finishes its job.
func (r *Attempts) decideOp(ctx context.Context, tx pgx.Tx, s *settlement, op *Op, missing, landed bool, slots *queueSlots) (bool, error) {
	a := op.Args
	meta := s.metaFor(a.FlowRunID, "")
	var tr domain.TaskRun
	if !missing {
		tr = s.u.taskRun(a.TaskRunID)
	}
	if tr.State.IsZero() {
		if op.Kind == OpStart {
			op.Result = &StartResult{Action: ActionSkip, Reason: "task run not found"}
			return false, nil
		}
		return true, nil
	}
	fr, _ := s.u.flowRun(a.FlowRunID)
	if op.Kind == OpStart {
		// A start whose job ended with its earlier commit (a cache hit,
		// or a wait that handed the attempt to another job) is done.
		res := &StartResult{Action: ActionSkip, Reason: "the job ended with an earlier commit whose answer was lost"}
		if !landed || startLost(tr, a) {
			var err error
			if res, err = r.decideStart(ctx, tx, s, op, fr, tr, meta, slots); err != nil {
				return false, err
			}
		}
		op.Result = res
		slots.started(op, res.Action)
		res.Slot = res.Action == ActionRun && slots.holds(op)
		return res.Action == ActionDone, nil
	}
	slots.finished(op)
	if a.ChildFlowRunID == uuid.Nil && startLost(tr, a) {
		// The database has lost the start this outcome follows (a failover
		// to an asynchronous standby loses the last commits): the attempt
		// is queued again, and its outcome dropped, as the log never
		// started it.
		r.opts.Logger.Warn("outcome of an attempt whose start the database lost: the attempt is queued again", "task_run_id", a.TaskRunID, "attempt", a.Attempt)
		return true, s.addJob(riverjob.Job{Args: a, Queue: op.Queue})
	}
	if landed {
		return false, nil // this outcome was recorded by an earlier commit whose answer was lost
	}
	cmd, err := r.outcomeCommand(s, op, fr, tr)
	if err != nil {
		return false, err
	}
	if cmd != nil {
		if _, err := s.decide(a.TaskRunID, cmd, meta); err != nil {
			return false, err
		}
	}
	return true, nil
}

// startLost reports whether the log has not started the job's attempt
// although it is the next one: with a job that is no longer running, or an
// outcome, that means the database lost the start (and perhaps the fetch)
// in a failover to an asynchronous standby, not that it committed earlier.
func startLost(tr domain.TaskRun, a riverjob.TaskRunArgs) bool {
	return tr.Attempt == a.Attempt-1 && (tr.State.Type == domain.Pending || tr.State.Type == domain.Scheduled)
}

// endJobs notes the jobs the batch deletes: those it finishes, and those
// of starts that wait, whose attempt is handed to a new job.
func endJobs(s *settlement, ops, finished []*Op) {
	for _, op := range finished {
		s.finishedJobs = append(s.finishedJobs, op.JobID)
	}
	s.deletedJobs = append(s.deletedJobs, s.finishedJobs...)
	for _, op := range ops {
		if op.Result != nil && op.Result.Action == ActionWait {
			s.deletedJobs = append(s.deletedJobs, op.JobID)
		}
	}
}

// committedEarlier returns the retried ops whose job is no longer running
// or gone: their earlier commit went through (and deleted the job, as a
// finished one or one that handed a waiting start's attempt to another job).
func committedEarlier(ctx context.Context, tx pgx.Tx, ops []*Op) (map[int64]bool, error) {
	var ids []int64
	for _, op := range ops {
		if op.Retried {
			ids = append(ids, op.JobID)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	done, err := riverjob.NotRunning(ctx, tx, ids)
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
func (r *Attempts) outcomeCommand(s *settlement, op *Op, fr domain.FlowRun, tr domain.TaskRun) (domain.TaskRunCommand, error) {
	a := op.Args
	out := op.Outcome
	current := tr.State.Type == domain.Running && tr.Attempt == a.Attempt
	switch {
	case a.ChildFlowRunID != uuid.Nil:
		child, _ := s.u.flowRun(a.ChildFlowRunID)
		return childOutcome(s, fr, tr, a, child)
	case out.Cancelled:
		if !current {
			r.opts.Logger.Debug("cancelled attempt was no longer current", "task_run_id", a.TaskRunID, "attempt", a.Attempt)
			return nil, nil
		}
		if fr.State.Type == domain.Cancelling || fr.State.Type.Terminal() {
			return domain.CancelTaskRun{}, nil
		}
		f := domain.AttemptFailure{Attempt: a.Attempt, Error: "the attempt was stopped", LogTail: out.LogTail}
		return domain.FailTaskRun{AttemptFailure: f, Now: s.now, Random: rand.Float64()}, nil
	case out.Failure != nil:
		f := *out.Failure
		f.Attempt = a.Attempt
		return domain.FailTaskRun{AttemptFailure: f, Now: s.now, Random: rand.Float64()}, nil
	}
	return domain.CompleteTaskRun{Attempt: a.Attempt, Result: out.Result, CacheKey: out.CacheKey, Outputs: out.Outputs, Metrics: out.Metrics}, nil
}

// decideStart decides the start of a job's attempt.
func (r *Attempts) decideStart(ctx context.Context, tx pgx.Tx, s *settlement, op *Op, fr domain.FlowRun, tr domain.TaskRun, meta domain.Metadata, slots *queueSlots) (*StartResult, error) {
	a := op.Args
	u := s.u
	resumed := false
	switch {
	case tr.State.Type == domain.Running && tr.Attempt == a.Attempt && op.Retried:
		// An earlier commit of this very start went through but its answer
		// was lost: the job is still ours, run the attempt.
		resumed = true
	case tr.State.Type == domain.Running && tr.Attempt == a.Attempt && op.JobAttempt > 1:
		// River works this job again: the worker that started the attempt
		// did not record its outcome.
		return &StartResult{Action: ActionRecover}, nil
	case a.Attempt != tr.Attempt+1 || (tr.State.Type != domain.Pending && tr.State.Type != domain.Scheduled):
		return &StartResult{Action: ActionSkip, Reason: fmt.Sprintf("task run is %s at attempt %d", tr.State.Type, tr.Attempt)}, nil
	case fr.State.Type.Terminal() || fr.State.Type == domain.Cancelling:
		return &StartResult{Action: ActionSkip, Reason: "flow run is " + string(fr.State.Type)}, nil
	}
	inputs, files := inputsOf(u, fr, tr)
	plan := Plan{
		FlowRunID: fr.ID, TaskRunID: tr.ID, Task: tr.Task, Attempt: a.Attempt,
		Params: domain.MergeParameters(fr.Parameters, tr.Task.Parameters), Inputs: inputs, InputFiles: files,
	}
	if resumed {
		if tr.ChildFlowRunID != nil {
			// the sub-flow run was started by that commit, and the job
			// finished with it
			return &StartResult{Action: ActionDone, Reason: "sub-flow run already started"}, nil
		}
		plan.CacheKey, _ = domain.CacheKey(tr.Task, plan.Params, keyInputs(inputs, files))
		slots.resume(op)
		return &StartResult{Action: ActionRun, Plan: plan}, nil
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

	if key, ok := domain.CacheKey(tr.Task, plan.Params, keyInputs(inputs, files)); ok {
		plan.CacheKey = key
		if !tr.Task.Cache.Refresh && tr.State.Type == domain.Pending {
			hit, found, err := lookupCache(ctx, tx, key)
			if err != nil {
				return nil, err
			}
			if found {
				if err := markStarted(); err != nil {
					return nil, err
				}
				cmd := domain.UseCachedResult{Result: hit.result, CacheKey: key, SourceTaskRunID: hit.taskRunID, Outputs: hit.outputs, Metrics: hit.metrics}
				if _, err := s.decide(tr.ID, cmd, meta); err != nil {
					return nil, err
				}
				return &StartResult{Action: ActionDone, Reason: "cached result of task run " + hit.taskRunID.String()}, nil
			}
		}
	}

	if tr.Task.Kind() == domain.TaskKindDeployment {
		return r.startChild(ctx, tx, s, plan, markStarted, meta)
	}
	if !slots.acquire(op) {
		return &StartResult{Action: ActionWait, Reason: "no free slot in work queue " + op.Queue}, nil
	}
	if _, err := u.decideTaskRun(tr.ID, domain.StartTaskRun{Attempt: a.Attempt, Worker: r.opts.Worker}, meta); err != nil {
		return nil, err
	}
	if err := markStarted(); err != nil {
		return nil, err
	}
	return &StartResult{Action: ActionRun, Plan: plan}, nil
}

// inputsOf returns the results of the tasks tr depends on (loaded in u), by
// task name (a task that returned nothing gives null), and the outputs of
// those that left some.
func inputsOf(u *unitOfWork, fr domain.FlowRun, tr domain.TaskRun) (map[string]json.RawMessage, map[string][]domain.Output) {
	inputs := make(map[string]json.RawMessage, len(tr.Task.DependsOn))
	var files map[string][]domain.Output
	for _, dep := range tr.Task.DependsOn {
		up := u.taskRun(fr.TaskRunIDs[dep])
		res := up.Result
		if len(res) == 0 {
			res = json.RawMessage("null")
		}
		inputs[dep] = res
		if len(up.Outputs) > 0 {
			if files == nil {
				files = map[string][]domain.Output{}
			}
			files[dep] = up.Outputs
		}
	}
	return inputs, files
}

// keyInputs are the inputs a cache key is made of: the upstream results
// and, for upstream tasks that left outputs, their names and digests under
// "<task>/outputs" (not a task name), so that other files make another key
// while the keys of tasks without input files stay what they were.
func keyInputs(inputs map[string]json.RawMessage, files map[string][]domain.Output) map[string]json.RawMessage {
	if len(files) == 0 {
		return inputs
	}
	out := maps.Clone(inputs)
	for task, outs := range files {
		digests := make(map[string]string, len(outs))
		for _, o := range outs {
			digests[o.Name] = o.SHA256
		}
		b, _ := json.Marshal(digests) // a map of strings always encodes
		out[task+"/outputs"] = b
	}
	return out
}
