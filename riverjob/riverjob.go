package riverjob

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier runs SQL: a pool, a connection or a transaction.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Job is a task run job to insert.
type Job struct {
	Args  TaskRunArgs
	Queue string
	// ScheduledAt is when the job is due; zero means now.
	ScheduledAt time.Time
}

// kindLiteral is KindTaskRun as an SQL literal, for statements built once.
const kindLiteral = `'` + KindTaskRun + `'`

// InsertSQL is a statement (for a WITH clause) that inserts task run jobs
// from source, a query of rows (args jsonb, queue text, at timestamptz):
// those due by now available, the others scheduled. Jobs are inserted
// directly rather than through River's client, which would send its insert
// notification from inside the transaction (a NOTIFY takes a database-wide
// lock at commit); the caller notifies after the commit (NotifyInsert).
func InsertSQL(source string) string {
	return `INSERT INTO river_job (args, kind, max_attempts, queue, scheduled_at, state)
    SELECT args, ` + kindLiteral + `, ` + strconv.Itoa(MaxAttempts) + `, queue, at,
        CASE WHEN at > now() THEN 'scheduled'::river_job_state ELSE 'available'::river_job_state END
    FROM (` + source + `) jobs`
}

// DeleteRunningSQL is a statement (for a WITH clause) that deletes the jobs
// whose ids the bigint[] expression ids holds and that are still running:
// the jobs of attempts whose outcome the transaction records. A job no
// longer running (the reaper took it back) is left as it is.
func DeleteRunningSQL(ids string) string {
	return `DELETE FROM river_job WHERE id = ANY(` + ids + `) AND state = 'running'`
}

// RequeueRunningSQL is two entries of a WITH clause, handed and requeued:
// the running jobs whose ids the bigint[] expression ids holds are deleted
// and each is inserted again as a new job, scheduled after the interval at
// the same index of the interval[] expression delays. requeued has the
// columns (id, queue, args) of the new jobs.
func RequeueRunningSQL(ids, delays string) string {
	return `handed AS (
    DELETE FROM river_job j
    USING unnest(` + ids + `) AS w(id)
    WHERE j.id = w.id AND j.state = 'running'
    RETURNING j.id, j.args, j.kind, j.max_attempts, j.queue, j.priority
), requeued AS (
    INSERT INTO river_job (args, kind, max_attempts, queue, priority, scheduled_at, state)
    SELECT h.args, h.kind, h.max_attempts, h.queue, h.priority, now() + w.recheck, 'scheduled'
    FROM handed h JOIN unnest(` + ids + `, ` + delays + `) AS w(id, recheck) ON w.id = h.id
    RETURNING id, queue, args
)`
}

// RunningSQL is a condition: the job with id jobID is running.
func RunningSQL(jobID string) string {
	return `EXISTS (SELECT 1 FROM river_job j WHERE j.id = ` + jobID + ` AND j.state = 'running')`
}

// UnfinishedSQL is a condition: the job with id jobID exists and has not
// ended (completed, cancelled or discarded).
func UnfinishedSQL(jobID string) string {
	return `EXISTS (SELECT 1 FROM river_job j WHERE j.id = ` + jobID + ` AND j.state NOT IN ('completed', 'cancelled', 'discarded'))`
}

// MakeAvailableSQL is a statement that makes available now the queued jobs
// that the FROM list from names by the expression jobID, where the
// condition and holds (true when empty). Each job's scheduled_at becomes
// since (at most now), so that it comes before the jobs queued after that
// time. It returns each job's queue.
func MakeAvailableSQL(from, jobID, since, and string) string {
	if and != "" {
		and = " AND " + and
	}
	return `UPDATE river_job j SET state = 'available', scheduled_at = least(` + since + `, now())
    FROM ` + from + ` WHERE j.id = ` + jobID + ` AND j.state IN ('scheduled', 'available')` + and + `
    RETURNING j.queue`
}

// QueueCountsSQL is a query of one row (ready, later, running): the task
// run jobs of the queue named by the expression queue that are due, that
// wait for a later time, and that run.
func QueueCountsSQL(queue string) string {
	return `SELECT count(*) FILTER (WHERE j.state = 'available' OR j.state = 'scheduled' AND j.scheduled_at <= now()) AS ready,
           count(*) FILTER (WHERE j.state = 'scheduled' AND j.scheduled_at > now()) AS later,
           count(*) FILTER (WHERE j.state = 'running') AS running
    FROM river_job j WHERE j.queue = ` + queue + ` AND j.kind = ` + kindLiteral + ` AND j.state IN ('available', 'scheduled', 'running')`
}

// ScalerQuery is a query of one number, the task run jobs of queue that are
// due or running: what a queue's workers have to do, for an autoscaler that
// polls the database (deploy/kubernetes runs it in KEDA's PostgreSQL scaler,
// which takes no parameters, so the queue is a literal).
func ScalerQuery(queue string) string {
	return `SELECT count(*) FROM river_job WHERE queue = ` + quoteLiteral(queue) + ` AND kind = ` + kindLiteral +
		` AND (state IN ('available', 'running') OR state = 'scheduled' AND scheduled_at <= now())`
}

func quoteLiteral(s string) string { return `'` + strings.ReplaceAll(s, `'`, `''`) + `'` }

// CountsByQueueSQL is a query of rows (queue, depth, running): per queue
// with task run jobs, how many are due and how many run.
const CountsByQueueSQL = `SELECT queue,
           count(*) FILTER (WHERE state = 'available' OR state = 'scheduled' AND scheduled_at <= now()) AS depth,
           count(*) FILTER (WHERE state = 'running') AS running
    FROM river_job WHERE kind = ` + kindLiteral + ` AND state IN ('available', 'scheduled', 'running')
    GROUP BY queue`

// Table is River's jobs table, for statements that delete its rows by id.
const Table = "river_job"

// FinalizedBeforeSQL selects the ids of the jobs that ended (completed,
// cancelled or discarded) before $1.
const FinalizedBeforeSQL = `
SELECT id FROM river_job WHERE state IN ('completed', 'cancelled', 'discarded') AND finalized_at < $1`

// NotRunning returns those of ids whose job is no longer running or gone.
func NotRunning(ctx context.Context, q Querier, ids []int64) ([]int64, error) {
	rows, err := q.Query(ctx, `
SELECT w.id FROM unnest($1::bigint[]) AS w(id)
WHERE NOT EXISTS (SELECT 1 FROM river_job j WHERE j.id = w.id AND j.state = 'running')`, ids)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// cancelQueuedSQL cancels the task run jobs of flow run $2 that wait to be
// worked.
const cancelQueuedSQL = `
UPDATE river_job SET state = 'cancelled', finalized_at = now()
WHERE args ->> 'flow_run_id' = $2::text AND kind = $1 AND state IN ('available', 'scheduled', 'retryable', 'pending')
RETURNING id`

// CancelQueued cancels the flow run's task run jobs that wait to be worked
// and returns their ids.
func CancelQueued(ctx context.Context, q Querier, flowRunID uuid.UUID) ([]int64, error) {
	rows, err := q.Query(ctx, cancelQueuedSQL, KindTaskRun, flowRunID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// QueueCancelQueued adds CancelQueued, without its result, to b.
func QueueCancelQueued(b *pgx.Batch, flowRunID uuid.UUID) {
	b.Queue(cancelQueuedSQL, KindTaskRun, flowRunID)
}

// RunningJob is a running task run job.
type RunningJob struct {
	ID     int64
	Queue  string
	Args   TaskRunArgs
	Worker string // the name of the worker that runs it
}

// RunningOfGoneWorkers returns the running task run jobs whose last
// attempt was taken by a worker (by its id in River's attempted_by) that
// is dead or stopped in Ordo's workers table, locked, skipping those
// another transaction holds.
func RunningOfGoneWorkers(ctx context.Context, tx pgx.Tx) ([]RunningJob, error) {
	rows, err := tx.Query(ctx, `
SELECT j.id, j.queue, j.args, w.name
FROM river_job j
JOIN workers w ON w.id::text = j.attempted_by[cardinality(j.attempted_by)]
WHERE j.state = 'running' AND j.kind = $1 AND (w.dead_at IS NOT NULL OR w.stopped_at IS NOT NULL)
ORDER BY j.id
FOR UPDATE OF j SKIP LOCKED`, KindTaskRun)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (RunningJob, error) {
		var j RunningJob
		var args []byte
		if err := row.Scan(&j.ID, &j.Queue, &args, &j.Worker); err != nil {
			return j, err
		}
		return j, json.Unmarshal(args, &j.Args)
	})
}

// DiscardRunning discards the jobs of ids that are still running, recording
// why among their errors, so that River never works them again.
func DiscardRunning(ctx context.Context, q Querier, ids []int64, why string) error {
	_, err := q.Exec(ctx, `
UPDATE river_job
SET state = 'discarded', finalized_at = now(),
    errors = array_append(errors, jsonb_build_object('at', now(), 'attempt', attempt, 'error', $2::text, 'trace', ''))
WHERE id = ANY($1) AND state = 'running'`, ids, why)
	return err
}

// GiveBack makes a running job workable again now, as River does with a
// job whose work failed, or discards it.
func GiveBack(ctx context.Context, q Querier, id int64, discard bool) error {
	state := "available"
	if discard {
		state = "discarded"
	}
	_, err := q.Exec(ctx, `
UPDATE river_job SET state = $2::river_job_state, scheduled_at = now(),
    finalized_at = CASE WHEN $2 = 'discarded' THEN now() END
WHERE id = $1 AND state = 'running'`, id, state)
	return err
}

// Backlog reports whether task run jobs that came due within the last
// within wait for a worker.
func Backlog(ctx context.Context, q Querier, within time.Duration) (bool, error) {
	var backlog bool
	err := q.QueryRow(ctx, `
SELECT EXISTS (SELECT 1 FROM river_job WHERE state = 'available' AND kind = $1
    AND scheduled_at <= now() AND scheduled_at > now() - $2::interval)`, KindTaskRun, within).Scan(&backlog)
	return backlog, err
}

// PromoteDue makes the scheduled task run jobs that are due available, and
// returns their queues and the database's time.
func PromoteDue(ctx context.Context, tx pgx.Tx) (queues []string, now time.Time, err error) {
	err = tx.QueryRow(ctx, `
WITH moved AS (
    UPDATE river_job SET state = 'available'
    WHERE state = 'scheduled' AND kind = $1 AND scheduled_at <= now()
    RETURNING queue
)
SELECT coalesce(array_agg(DISTINCT queue), '{}'), now() FROM moved`, KindTaskRun).Scan(&queues, &now)
	return queues, now, err
}

// NotifyBecameDue wakes River's producers of the queues that got due jobs:
// moved (those PromoteDue moved), and those whose jobs River's own
// scheduler made available ahead of time and whose time came in
// (since, now]. The notifications go out when tx commits. It returns how
// many queues it notified.
func NotifyBecameDue(ctx context.Context, tx pgx.Tx, since time.Time, moved []string, now time.Time) (int, error) {
	var n int
	err := tx.QueryRow(ctx, `
WITH queues AS (
    SELECT unnest($3::text[]) AS queue
    UNION
    SELECT queue FROM river_job
    WHERE state = 'available' AND kind = $1 AND scheduled_at > $2 AND scheduled_at <= $4
)
SELECT count(pg_notify(current_schema() || '.river_insert', json_build_object('queue', queue)::text))
FROM queues`, KindTaskRun, since, moved, now).Scan(&n)
	return n, err
}

// NextDue returns how long until the next task run job is due, by the
// database's clock; ok is false when none waits.
func NextDue(ctx context.Context, q Querier) (d time.Duration, ok bool, err error) {
	var secs *float64
	if err := q.QueryRow(ctx, `
SELECT extract(epoch FROM min(scheduled_at) - clock_timestamp())::float8
FROM river_job WHERE state IN ('scheduled', 'available') AND kind = $1 AND scheduled_at > now()`, KindTaskRun).Scan(&secs); err != nil {
		return 0, false, err
	}
	if secs == nil {
		return 0, false, nil
	}
	return time.Duration(*secs * float64(time.Second)), true, nil
}

// NotifyInsert sends River's insert notification for queues, which wakes
// the producers of every worker on them at once.
func NotifyInsert(ctx context.Context, q Querier, queues []string) error {
	if len(queues) == 0 {
		return nil
	}
	_, err := q.Exec(ctx, `
SELECT pg_notify(current_schema() || '.river_insert', json_build_object('queue', q)::text) FROM unnest($1::text[]) AS q`, queues)
	return err
}

// DueChannel is the NOTIFY channel (after "<schema>.") that tells due
// timers a task run job was queued for later.
const DueChannel = "ordo_due"

// NotifyDueTx tells the due timers of every process, when tx commits, that
// it queued task run jobs for later, the earliest due at at. The payload is
// that time in Unix microseconds: a timer that will look again before it
// need not wake, which keeps thousands of runs created an hour ahead from
// waking every timer thousands of times.
func NotifyDueTx(ctx context.Context, tx pgx.Tx, at time.Time) error {
	if _, err := tx.Exec(ctx, `SELECT pg_notify(current_schema() || '.`+DueChannel+`', $1)`, strconv.FormatInt(at.UnixMicro(), 10)); err != nil {
		return fmt.Errorf("notify due timers: %w", err)
	}
	return nil
}
