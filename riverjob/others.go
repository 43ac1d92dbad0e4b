package riverjob

import (
	"context"
	"time"
)

// Statements on the jobs of other kinds than task runs (the automations'
// deliveries), and on task run jobs a worker left behind, for the packages
// that own those kinds.

// RescueStuckSQL is a statement (for a WITH clause) that moves the jobs of
// kind kind on queue queue (SQL expressions) running for longer than the
// number of seconds secs back to available, or to discarded when their
// attempts are spent, recording why (a string expression) among their
// errors. It returns each job's args and new state.
func RescueStuckSQL(kind, queue, secs, why string) string {
	return `UPDATE river_job SET
        state = CASE WHEN attempt >= max_attempts THEN 'discarded' ELSE 'available' END::river_job_state,
        scheduled_at = now(),
        finalized_at = CASE WHEN attempt >= max_attempts THEN now() END,
        errors = array_append(errors, jsonb_build_object('at', now(), 'attempt', attempt, 'error', ` + why + `, 'trace', ''))
    WHERE kind = ` + kind + ` AND queue = ` + queue + ` AND state = 'running' AND attempted_at < now() - make_interval(secs => ` + secs + `)
    RETURNING args, state`
}

// EndedUnworkedSQL is a query of the jobs of kind kind (an SQL expression)
// that River ended without their worker finishing them (discarded, as a
// job rescued as stuck after its last attempt is, or cancelled), with the
// columns (args, attempt, error): error is the last one recorded, or says
// how the job ended. River's index on (state, finalized_at) serves it.
func EndedUnworkedSQL(kind string) string {
	return `SELECT args, attempt, coalesce(errors[array_length(errors, 1)]->>'error', 'its job was ' || state::text) AS error
    FROM river_job WHERE state IN ('discarded', 'cancelled') AND finalized_at IS NOT NULL AND kind = ` + kind
}

// LastJobByArgsSQL is a query of the id and state (text) of the newest job
// of kind kind whose args contain the jsonb expression args; the args' GIN
// index serves it.
func LastJobByArgsSQL(kind, args string) string {
	return `SELECT id, state::text FROM river_job WHERE kind = ` + kind + ` AND args @> ` + args + ` ORDER BY id DESC LIMIT 1`
}

// AllowAttempts lets the job with id make n more attempts after those it
// made.
func AllowAttempts(ctx context.Context, q Querier, id int64, n int) error {
	_, err := q.Exec(ctx, `UPDATE river_job SET max_attempts = attempt + $2 WHERE id = $1`, id, n)
	return err
}

// UnheldJob is a task run job running in a worker's name.
type UnheldJob struct {
	ID    int64
	Spent bool // its attempts are spent: giving it back discards it
}

// RunningInWorker returns the task run jobs running in the name of the
// worker with id worker (River's attempted_by) whose attempt began more
// than olderThan ago.
func RunningInWorker(ctx context.Context, q Querier, worker string, olderThan time.Duration) ([]UnheldJob, error) {
	rows, err := q.Query(ctx, `
SELECT id, attempt >= max_attempts FROM river_job
WHERE state = 'running' AND kind = $1 AND attempted_by[cardinality(attempted_by)] = $2
  AND attempted_at < now() - make_interval(secs => $3)`, KindTaskRun, worker, olderThan.Seconds())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var jobs []UnheldJob
	for rows.Next() {
		var j UnheldJob
		if err := rows.Scan(&j.ID, &j.Spent); err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	return jobs, rows.Err()
}
