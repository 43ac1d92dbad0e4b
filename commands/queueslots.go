package commands

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ordoflow/ordo/riverjob"
)

// A work queue's concurrency limit (work_queues.concurrency_limit) holds
// across all workers through the table work_queue_slots, changed only under
// the queue's work_queues row lock:
//
//   - The transaction that records an attempt's start takes a slot (a held
//     row) when fewer than the limit are in use, or else records nothing
//     about the task run: it adds a waiting row and hands the attempt to a
//     new River job scheduled for later, so that waiting uses no retry (of
//     the task or of River) and holds no worker.
//   - The transaction that records the outcome frees the slot and grants it
//     to the first waiting attempt in line, whose job it makes available at
//     once (one being looked at again keeps its place: its start finds the
//     grant). That attempt's start then finds its granted row and takes it.
//   - The line: attempts of the run that was due first (run_at), then the
//     one that asked first (created_at, set under the lock). A run's later
//     tasks ask only once the earlier ones ended; by their run they go
//     ahead of the runs that became due meanwhile. A start takes a free
//     slot only when no waiting attempt is ahead of it.
//   - Cancelling a run removes the rows of its queued jobs and grants the
//     slots they were granted to the next waiting attempts.
//   - The reaper frees the slots of dead workers and of jobs that ended, and
//     grants slots that a raised limit (or attempts started before the limit
//     was set, which count against it) left free.
//   - Saving a limit and recording starts exclude each other (advisory
//     locks, migration 0013), so an attempt either started before the save,
//     and counts against the limit, or sees it.
//
// A queue without a limit costs a shared advisory lock and an index lookup
// per batch of starts, and nothing per outcome.

// A waiting attempt sleeps as long as it has waited so far, within these
// bounds, before it looks for a free slot by itself. That is a safety net
// for a reaper that does not run: a freed slot is granted at once, and the
// reaper grants the slots that a raised limit or attempts started before
// the limit free. A long sleep keeps waiting attempts from churning through
// fetches that find no slot.
const (
	slotRecheckMin = 30 * time.Second
	slotRecheckMax = 2 * time.Minute
)

// queueSlots is what one transaction of starts or outcomes does with the
// slots of its jobs' queues. A nil *queueSlots means no queue of the batch has
// a limit: every method is then a no-op.
type queueSlots struct {
	worker  uuid.UUID
	recheck [2]time.Duration // the shortest and longest a waiting attempt sleeps
	runAt   func(flowRunID uuid.UUID) time.Time
	limit   map[string]int64 // limited queues of the batch, locked
	used    map[string]int64 // their slots in use, counted under the lock
	rows    map[int64]slotRow
	win     map[int64]bool  // starts without a slot that are first in line for a free one
	ahead   map[string]bool // queues where waiting attempts are in line for a free slot

	hold, wait []slotJob
	release    []int64
	freed      map[string]bool // limited queues where a slot in use was released
}

type slotRow struct {
	state  string // waiting, granted or held
	waited time.Duration
	key    slotKey
}

// slotKey is an attempt's place in its queue's line (see the top).
type slotKey struct {
	runAt, asked time.Time
	jobID        int64
}

// askingNow is the asked time of a start without a row: after every row.
var askingNow = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

func (k slotKey) compare(o slotKey) int {
	if c := k.runAt.Compare(o.runAt); c != 0 {
		return c
	}
	if c := k.asked.Compare(o.asked); c != 0 {
		return c
	}
	return cmp.Compare(k.jobID, o.jobID)
}

type slotJob struct {
	jobID     int64
	queue     string
	taskRunID uuid.UUID
	attempt   int
	runAt     time.Time     // when its run was due
	recheck   time.Duration // waiting: when to look again
}

func (qs *queueSlots) jobOf(op *Op) slotJob {
	return slotJob{jobID: op.JobID, queue: op.Queue, taskRunID: op.Args.TaskRunID, attempt: op.Args.Attempt, runAt: qs.runAt(op.Args.FlowRunID)}
}

// lockQueueSlots locks the limited queues of a batch's starts and of its
// outcomes that free a slot, and reads what deciding the starts needs;
// runAt gives when a flow run of the batch was due.
func (r *Attempts) lockQueueSlots(ctx context.Context, tx pgx.Tx, ops []*Op, runAt func(uuid.UUID) time.Time) (*queueSlots, error) {
	var queues, starting []string
	for _, op := range ops {
		if op.Kind == OpStart {
			starting = append(starting, op.Queue)
		}
		if op.Kind == OpStart || op.Slot {
			queues = append(queues, op.Queue)
		}
	}
	if len(queues) == 0 {
		return nil, nil
	}
	slices.Sort(queues)
	queues = slices.Compact(queues)
	if len(starting) > 0 {
		// A save of a limit on these queues waits for this transaction, and
		// this one for it: the limits read next are the ones in force.
		slices.Sort(starting)
		if _, err := tx.Exec(ctx, `SELECT lock_work_queues_for_starts($1)`, slices.Compact(starting)); err != nil {
			return nil, fmt.Errorf("lock work queues: %w", err)
		}
	}
	// One statement finds the limits and locks them, in name order; the
	// counts that follow are read in later statements, which see what
	// transactions that held the locks before committed.
	rows, err := tx.Query(ctx, `
SELECT name, concurrency_limit FROM work_queues
WHERE name = ANY($1) AND concurrency_limit IS NOT NULL
ORDER BY name FOR NO KEY UPDATE`, queues)
	if err != nil {
		return nil, fmt.Errorf("lock work queue limits: %w", err)
	}
	qs := &queueSlots{worker: r.opts.WorkerID, recheck: [2]time.Duration{slotRecheckMin, slotRecheckMax},
		limit: map[string]int64{}, used: map[string]int64{}, rows: map[int64]slotRow{},
		win: map[int64]bool{}, ahead: map[string]bool{}, runAt: runAt}
	if r.opts.SlotRecheck > 0 {
		qs.recheck = [2]time.Duration{r.opts.SlotRecheck, r.opts.SlotRecheck}
	}
	for rows.Next() {
		var (
			name  string
			limit int64
		)
		if err := rows.Scan(&name, &limit); err != nil {
			rows.Close()
			return nil, fmt.Errorf("lock work queue limits: %w", err)
		}
		qs.limit[name] = limit
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lock work queue limits: %w", err)
	}
	if len(qs.limit) == 0 && !slices.ContainsFunc(ops, func(op *Op) bool { return op.Slot }) {
		return nil, nil
	}
	return qs, qs.read(ctx, tx, ops)
}

// read reads the slot rows of the batch's starts in limited queues, the
// slots in use of those queues (not counting the batch's own jobs, which
// run without a slot row while they start), and the waiting attempts first
// in line for their free slots; then picks the starts that are in line for
// one (win).
func (qs *queueSlots) read(ctx context.Context, tx pgx.Tx, ops []*Op) error {
	var jobs []int64
	for _, op := range ops {
		if _, limited := qs.limit[op.Queue]; limited && op.Kind == OpStart {
			jobs = append(jobs, op.JobID)
		}
	}
	if len(jobs) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, readSlotsSQL, jobs, slices.Sorted(maps.Keys(qs.limit)))
	if err != nil {
		return fmt.Errorf("read work queue slots: %w", err)
	}
	defer rows.Close()
	line := map[string][]slotKey{} // by queue: those in line, a batch's start with its job id
	for rows.Next() {
		var (
			job          *int64
			queue        string
			state        *string
			n            float64
			runAt, asked *time.Time
		)
		if err := rows.Scan(&job, &queue, &state, &n, &runAt, &asked); err != nil {
			return fmt.Errorf("read work queue slots: %w", err)
		}
		switch {
		case job == nil:
			qs.used[queue] = int64(n)
		case *state == "ahead":
			line[queue] = append(line[queue], slotKey{runAt: *runAt, asked: *asked})
			qs.ahead[queue] = true
		default:
			qs.rows[*job] = slotRow{state: *state, waited: time.Duration(n * float64(time.Second)),
				key: slotKey{runAt: *runAt, asked: *asked, jobID: *job}}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read work queue slots: %w", err)
	}
	for _, op := range ops {
		if _, limited := qs.limit[op.Queue]; !limited || op.Kind != OpStart {
			continue
		}
		row, has := qs.rows[op.JobID]
		switch {
		case !has:
			line[op.Queue] = append(line[op.Queue], slotKey{runAt: qs.runAt(op.Args.FlowRunID), asked: askingNow, jobID: op.JobID})
		case row.state == "waiting":
			line[op.Queue] = append(line[op.Queue], row.key)
		}
	}
	for q, keys := range line {
		slices.SortFunc(keys, slotKey.compare)
		for _, k := range keys[:max(0, min(len(keys), int(qs.limit[q]-qs.used[q])))] {
			if k.jobID != 0 {
				qs.win[k.jobID] = true
			}
		}
	}
	return nil
}

// readSlotsSQL reads, for the jobs $1 of a batch's starts in the limited
// queues $2, the slots in use of each queue (job NULL), the jobs' rows, and
// the waiting attempts first in line for the free slots (state 'ahead').
var readSlotsSQL = `
WITH q AS (
    SELECT w.name, w.concurrency_limit AS lim, work_queue_slots_in_use(w.name, w.updated_at, $1) AS used
    FROM work_queues w WHERE w.name = ANY($2)
)
SELECT NULL::bigint, q.name, NULL::text, q.used::float8, NULL::timestamptz, NULL::timestamptz FROM q
UNION ALL
SELECT s.job_id, s.queue, s.state, extract(epoch FROM now() - s.created_at)::float8, s.run_at, s.created_at
FROM work_queue_slots s WHERE s.job_id = ANY($1)
UNION ALL
SELECT 0, q.name, 'ahead', 0, a.run_at, a.created_at FROM q CROSS JOIN LATERAL (
    SELECT s.run_at, s.created_at FROM work_queue_slots s
    WHERE s.queue = q.name AND s.state = 'waiting' AND s.job_id <> ALL ($1) AND ` + riverjob.UnfinishedSQL("s.job_id") + `
    ORDER BY s.run_at, s.created_at, s.job_id
    LIMIT greatest(q.lim - q.used, 0)
) a`

// acquire takes a slot for a start that is about to run, and reports
// whether it may run: when its queue has no limit, holds a slot granted to
// it (or taken by an earlier commit of this start), or is in line for a
// free one. Otherwise the start waits.
func (qs *queueSlots) acquire(op *Op) bool {
	if qs == nil {
		return true
	}
	q := op.Queue
	limit, limited := qs.limit[q]
	if !limited {
		return true
	}
	row, has := qs.rows[op.JobID]
	switch {
	case has && row.state != "waiting":
	case qs.win[op.JobID] && qs.used[q] < limit:
		qs.used[q]++
	default:
		j := qs.jobOf(op)
		j.recheck = min(max(row.waited, qs.recheck[0]), qs.recheck[1])
		qs.wait = append(qs.wait, j)
		return false
	}
	qs.hold = append(qs.hold, qs.jobOf(op))
	return true
}

// resume keeps the slot that an earlier commit of a start took, if any.
func (qs *queueSlots) resume(op *Op) {
	if qs == nil {
		return
	}
	if row, has := qs.rows[op.JobID]; has && row.state != "waiting" {
		qs.hold = append(qs.hold, qs.jobOf(op))
	}
}

// holds reports whether a start holds a slot, which its outcome must free.
func (qs *queueSlots) holds(op *Op) bool {
	return qs != nil && slices.ContainsFunc(qs.hold, func(j slotJob) bool { return j.jobID == op.JobID })
}

// started notes how a start was decided: one that will not run frees what
// it held or waited with.
func (qs *queueSlots) started(op *Op, action Action) {
	if qs == nil || action == ActionRun || action == ActionWait {
		return
	}
	if row, has := qs.rows[op.JobID]; has {
		qs.free(op.JobID, op.Queue, row.state != "waiting")
	}
}

// finished notes an outcome: it frees the slot its start took.
func (qs *queueSlots) finished(op *Op) {
	if qs != nil && op.Slot {
		qs.free(op.JobID, op.Queue, true)
	}
}

func (qs *queueSlots) free(jobID int64, queue string, inUse bool) {
	qs.release = append(qs.release, jobID)
	if _, limited := qs.limit[queue]; limited && inUse {
		if qs.freed == nil {
			qs.freed = map[string]bool{}
		}
		qs.freed[queue] = true
	}
}

// applySlotsSQL takes the slots of starts that run; hands each attempt that
// waits to a new job, scheduled to look again later, and deletes the job it
// was fetched with, as a finished one (a job set back to scheduled instead
// could be fetched again before River records the end of this work on it,
// and that record would then complete the new work); and frees released
// slots. A new row asks at the statement's time, after the lock: later
// than every row it could see.
var applySlotsSQL = `
WITH held AS (
    INSERT INTO work_queue_slots (task_run_id, attempt, queue, job_id, state, worker_id, run_at, created_at)
    SELECT h.task_run_id, h.attempt, h.queue, h.job_id, 'held', $5, h.run_at, statement_timestamp()
    FROM unnest($1::bigint[], $2::text[], $3::uuid[], $4::int[], $9::timestamptz[]) AS h(job_id, queue, task_run_id, attempt, run_at)
    ON CONFLICT (task_run_id, attempt) DO UPDATE
    SET state = 'held', job_id = EXCLUDED.job_id, worker_id = EXCLUDED.worker_id, updated_at = now()
    RETURNING 1
), ` + riverjob.RequeueRunningSQL(`$6::bigint[]`, `$7::interval[]`) + `, waiting AS (
    INSERT INTO work_queue_slots (task_run_id, attempt, queue, job_id, state, run_at, created_at)
    SELECT w.task_run_id, w.attempt, r.queue, r.id, 'waiting', w.run_at, statement_timestamp()
    FROM requeued r
    JOIN unnest($10::uuid[], $11::int[], $12::timestamptz[]) AS w(task_run_id, attempt, run_at)
        ON w.task_run_id = (r.args ->> 'task_run_id')::uuid AND w.attempt = (r.args ->> 'attempt')::int
    ON CONFLICT (task_run_id, attempt) DO UPDATE SET job_id = EXCLUDED.job_id, updated_at = now()
    RETURNING 1
), released AS (
    DELETE FROM work_queue_slots WHERE job_id = ANY($8) RETURNING 1
)
SELECT (SELECT count(*) FROM held) + (SELECT count(*) FROM waiting) + (SELECT count(*) FROM released)`

// apply writes what the batch decided, then grants the slots it freed; call
// it once the batch's events are appended. The queues of woken jobs are
// noted in s, to be notified after the commit.
func (qs *queueSlots) apply(ctx context.Context, tx pgx.Tx, s *settlement) error {
	if qs == nil || len(qs.hold)+len(qs.wait)+len(qs.release) == 0 {
		return nil
	}
	n := len(qs.hold)
	hIDs, hQueues, hRuns, hAttempts, hRunAt := make([]int64, n), make([]string, n), make([][16]byte, n), make([]int32, n), make([]time.Time, n)
	for i, j := range qs.hold {
		hIDs[i], hQueues[i], hRuns[i], hAttempts[i], hRunAt[i] = j.jobID, j.queue, j.taskRunID, int32(j.attempt), j.runAt
	}
	n = len(qs.wait)
	waitIDs, rechecks, wRuns, wAttempts, wRunAt := make([]int64, n), make([]time.Duration, n), make([][16]byte, n), make([]int32, n), make([]time.Time, n)
	for i, j := range qs.wait {
		waitIDs[i], rechecks[i], wRuns[i], wAttempts[i], wRunAt[i] = j.jobID, j.recheck, j.taskRunID, int32(j.attempt), j.runAt
	}
	if _, err := tx.Exec(ctx, applySlotsSQL, hIDs, hQueues, hRuns, hAttempts, qs.worker, waitIDs, rechecks, qs.release,
		hRunAt, wRuns, wAttempts, wRunAt); err != nil {
		return fmt.Errorf("record work queue slots: %w", err)
	}
	// Free slots go to those in line: the waiting attempts read as ahead
	// of the batch's starts, and starts that were in line but did not run.
	grant := maps.Clone(qs.freed)
	for q, limit := range qs.limit {
		if qs.used[q] < limit && (qs.ahead[q] || slices.ContainsFunc(qs.wait, func(j slotJob) bool { return j.queue == q })) {
			if grant == nil {
				grant = map[string]bool{}
			}
			grant[q] = true
		}
	}
	if len(grant) == 0 {
		return nil
	}
	woken, err := grantSlots(ctx, tx, slices.Sorted(maps.Keys(grant)))
	for _, q := range woken {
		s.wakeQueue(q)
	}
	return err
}

// grantSlotsSQL grants the free slots of limited queues to the waiting
// attempts first in line and makes their jobs available now, ahead of the
// jobs queued after the attempt first waited. An attempt whose job runs (a
// worker looks again) is granted too: its start finds the grant.
var grantSlotsSQL = `
WITH q AS (
    SELECT w.name, w.concurrency_limit - work_queue_slots_in_use(w.name, w.updated_at, '{}') AS free
    FROM work_queues w WHERE w.name = ANY($1) AND w.concurrency_limit IS NOT NULL
), chosen AS (
    SELECT c.job_id FROM q CROSS JOIN LATERAL (
        SELECT s.job_id FROM work_queue_slots s
        WHERE s.queue = q.name AND s.state = 'waiting' AND ` + riverjob.UnfinishedSQL("s.job_id") + `
        ORDER BY s.run_at, s.created_at, s.job_id
        LIMIT greatest(q.free, 0)
    ) c
), granted AS (
    UPDATE work_queue_slots s SET state = 'granted', updated_at = now()
    FROM chosen c WHERE s.job_id = c.job_id
    RETURNING s.job_id, s.created_at
)
` + riverjob.MakeAvailableSQL("granted g", "g.job_id", "g.created_at", "")

// releaseSlots removes the slot rows of jobs that ended before they ran
// (cancelled while they waited for a slot, or after one was granted to
// them), under their queues' locks, and grants the slots they had to the
// next waiting attempts at once rather than at the reaper's next pass. It
// returns the queues of the jobs it woke.
func releaseSlots(ctx context.Context, tx pgx.Tx, jobIDs []int64) ([]string, error) {
	if len(jobIDs) == 0 {
		return nil, nil
	}
	rows, err := tx.Query(ctx, `
SELECT name FROM work_queues
WHERE name IN (SELECT queue FROM work_queue_slots WHERE job_id = ANY($1))
ORDER BY name FOR NO KEY UPDATE`, jobIDs)
	if err != nil {
		return nil, fmt.Errorf("lock work queues: %w", err)
	}
	queues, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(queues) == 0 {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM work_queue_slots WHERE job_id = ANY($1)`, jobIDs); err != nil {
		return nil, fmt.Errorf("release work queue slots: %w", err)
	}
	return grantSlots(ctx, tx, queues)
}

// grantSlots runs grantSlotsSQL on queues locked by tx, and returns the
// queues of the jobs it woke.
func grantSlots(ctx context.Context, tx pgx.Tx, queues []string) ([]string, error) {
	rows, err := tx.Query(ctx, grantSlotsSQL, queues)
	if err != nil {
		return nil, fmt.Errorf("grant work queue slots: %w", err)
	}
	woken, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("grant work queue slots: %w", err)
	}
	slices.Sort(woken)
	return slices.Compact(woken), nil
}

// sweepSlotsSQL frees the slots that no running attempt uses any more: those
// of jobs that ended or are gone, those held by a worker that died or
// stopped, and every row of a queue that has no limit any more (its waiting
// jobs are made available).
var sweepSlotsSQL = `
WITH gone AS (
    DELETE FROM work_queue_slots s
    WHERE s.queue = ANY($1) AND (
        s.queue <> ALL ($2)
        OR NOT ` + riverjob.UnfinishedSQL("s.job_id") + `
        OR s.state = 'held' AND NOT (` + riverjob.RunningSQL("s.job_id") + ` AND EXISTS (
            SELECT 1 FROM workers w WHERE w.id = s.worker_id AND w.dead_at IS NULL AND w.stopped_at IS NULL)))
    RETURNING s.job_id, s.queue, s.state, s.created_at
), woken AS (
    ` + riverjob.MakeAvailableSQL("gone g", "g.job_id", "g.created_at", "g.state = 'waiting'") + `
)
SELECT (SELECT count(*) FROM gone WHERE state <> 'waiting'), array(SELECT DISTINCT queue FROM woken)`

// sweepQueueSlots frees the slots that leaked (see sweepSlotsSQL) and grants
// the free slots of limited queues to waiting attempts, in one transaction.
// It returns how many slots it freed.
func sweepQueueSlots(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) (int, error) {
	var (
		freed int
		woken []string
	)
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT DISTINCT queue FROM work_queue_slots ORDER BY queue`)
		if err != nil {
			return fmt.Errorf("find work queues with slots: %w", err)
		}
		queues, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(queues) == 0 {
			return err
		}
		// Every queue with rows is locked, limited or not, so that a limit
		// set meanwhile is seen.
		rows, err = tx.Query(ctx, `
SELECT name, concurrency_limit IS NOT NULL FROM work_queues WHERE name = ANY($1)
ORDER BY name FOR NO KEY UPDATE`, queues)
		if err != nil {
			return fmt.Errorf("lock work queues: %w", err)
		}
		var (
			limited = []string{} // not NULL in sweepSlotsSQL
			name    string
			has     bool
		)
		if _, err := pgx.ForEachRow(rows, []any{&name, &has}, func() error {
			if has {
				limited = append(limited, name)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("lock work queues: %w", err)
		}
		var unlimitedWoken []string
		if err := tx.QueryRow(ctx, sweepSlotsSQL, queues, limited).Scan(&freed, &unlimitedWoken); err != nil {
			return fmt.Errorf("free leaked work queue slots: %w", err)
		}
		if woken, err = grantSlots(ctx, tx, limited); err != nil {
			return err
		}
		woken = append(woken, unlimitedWoken...)
		return nil
	})
	if err != nil {
		return 0, err
	}
	if freed > 0 {
		logger.Info("work queue slots freed that no running attempt used (a dead worker's, a job that ended, a queue without a limit now)", "slots", freed)
	}
	if err := riverjob.NotifyInsert(context.WithoutCancel(ctx), pool, woken); err != nil {
		logger.Debug("wake queues", "err", err)
	}
	return freed, nil
}
