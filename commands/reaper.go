package commands

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/riverjob"
)

// reaperLockKey is the advisory lock a reaper pass holds for its
// transaction ("ordoreap"): with several servers running a reaper, one pass
// works at a time and the others skip.
const reaperLockKey int64 = 0x6f72646f72656170

// Reaping holds the reaper's verdicts on the attempts of workers that died:
// each is recorded as crashed (FailTaskRun with Crashed), so that the task
// run's retry policy queues a new attempt or the task run ends CRASHED; a
// job fetched but not started is queued again; and the dead worker's jobs
// are discarded, so that River never works them again. jobs.Reaper runs it.
type Reaping struct {
	pool   *pgxpool.Pool
	eng    *engine
	logger *slog.Logger
}

// NewReaping returns the reaper's verdicts; enq inserts jobs.
func NewReaping(pool *pgxpool.Pool, store *eventstore.Store, enq Enqueuer, logger *slog.Logger) *Reaping {
	if logger == nil {
		logger = slog.Default()
	}
	return &Reaping{pool: pool, eng: newEngine(store, enq), logger: logger}
}

// ReapResult says what one pass did.
type ReapResult struct {
	Skipped  bool // another reaper holds the lock
	Workers  int  // workers declared dead
	Crashed  int  // attempts recorded as crashed
	Requeued int  // jobs of dead workers queued again
	Slots    int  // work queue slots freed that no running attempt used
}

// Reap makes one pass, in one transaction: workers whose heartbeat is older
// than deadAfter are declared dead and their attempts reaped, and expired
// cache entries are deleted. Then the work queue slots that no running
// attempt uses are freed (sweepQueueSlots).
func (r *Reaping) Reap(ctx context.Context, deadAfter time.Duration) (ReapResult, error) {
	var (
		res     ReapResult
		settled *settlement
	)
	err := retryTx(ctx, r.eng.store, func(tx pgx.Tx) error {
		res, settled = ReapResult{}, nil
		var locked bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, reaperLockKey).Scan(&locked); err != nil {
			return fmt.Errorf("take the reaper lock: %w", err)
		}
		if !locked {
			res.Skipped = true
			return nil
		}
		var err error
		if res.Workers, err = r.declareDead(ctx, tx, deadAfter); err != nil {
			return err
		}
		jobs, err := riverjob.RunningOfGoneWorkers(ctx, tx)
		if err != nil {
			return fmt.Errorf("find jobs of dead workers: %w", err)
		}
		if len(jobs) > 0 {
			if res.Crashed, res.Requeued, settled, err = r.reapJobs(ctx, tx, jobs, deadAfter); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM task_cache WHERE expires_at < now()`); err != nil {
			return fmt.Errorf("delete expired cache entries: %w", err)
		}
		return nil
	})
	if err != nil || res.Skipped {
		return res, err
	}
	wakeAfterCommit(ctx, r.pool, settled, r.logger)
	// After the dead workers' jobs are discarded: their slots go too.
	res.Slots, err = sweepQueueSlots(ctx, r.pool, r.logger)
	return res, err
}

// declareDead marks dead the workers whose last heartbeat is older than
// deadAfter, and returns how many.
func (r *Reaping) declareDead(ctx context.Context, tx pgx.Tx, deadAfter time.Duration) (int, error) {
	rows, err := tx.Query(ctx, `
UPDATE workers SET dead_at = now()
WHERE stopped_at IS NULL AND dead_at IS NULL AND last_heartbeat_at < now() - make_interval(secs => $1)
RETURNING name`, deadAfter.Seconds())
	if err != nil {
		return 0, fmt.Errorf("declare dead workers: %w", err)
	}
	dead, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("declare dead workers: %w", err)
	}
	for _, name := range dead {
		r.logger.Warn("worker declared dead: no heartbeat", "worker", name, "dead_after", deadAfter)
	}
	return len(dead), nil
}

// reapJobs records the attempts of dead workers' jobs as crashed, queues
// again the jobs whose attempt had not started, and discards the jobs.
func (r *Reaping) reapJobs(ctx context.Context, tx pgx.Tx, jobs []riverjob.RunningJob, deadAfter time.Duration) (crashed, requeued int, s *settlement, err error) {
	s = r.eng.newSettlement(domain.Metadata{Actor: "reaper"})
	var ids []uuid.UUID
	live := map[int64]bool{}
	for _, j := range jobs {
		if _, _, err := s.loadFlowRun(ctx, tx, j.Args.FlowRunID); err != nil {
			if domain.ErrorCode(err) == domain.CodeNotFound {
				continue
			}
			return 0, 0, nil, err
		}
		live[j.ID] = true
		ids = append(ids, j.Args.TaskRunID)
	}
	if err := s.u.loadTaskRuns(ctx, tx, ids); err != nil {
		return 0, 0, nil, err
	}
	jobIDs := make([]int64, 0, len(jobs))
	for _, j := range jobs {
		jobIDs = append(jobIDs, j.ID)
		if !live[j.ID] {
			continue
		}
		a := j.Args
		tr := s.u.taskRun(a.TaskRunID)
		again := riverjob.Job{Args: a, Queue: j.Queue}
		switch {
		case a.ChildFlowRunID != uuid.Nil:
			// reporting a sub-flow's end: report it again
			if err := s.addJob(again); err != nil {
				return 0, 0, nil, err
			}
			requeued++
		case tr.State.Type == domain.Running && tr.Attempt == a.Attempt && tr.ChildFlowRunID == nil:
			msg := fmt.Sprintf("worker %s stopped sending heartbeats for %s and was declared dead: attempt %d was lost", j.Worker, deadAfter, a.Attempt)
			cmd := domain.FailTaskRun{
				AttemptFailure: domain.AttemptFailure{Attempt: a.Attempt, Error: msg, Crashed: true},
				Now:            s.now, Random: rand.Float64(),
			}
			if _, err := s.decide(a.TaskRunID, cmd, s.metaFor(a.FlowRunID, "worker "+j.Worker+" declared dead")); err != nil {
				return 0, 0, nil, err
			}
			crashed++
			r.logger.Warn("attempt of a dead worker recorded as crashed", "worker", j.Worker, "task_run_id", a.TaskRunID, "attempt", a.Attempt)
		case (tr.State.Type == domain.Pending || tr.State.Type == domain.Scheduled) && tr.Attempt == a.Attempt-1:
			// fetched by the dead worker but never started
			if err := s.addJob(again); err != nil {
				return 0, 0, nil, err
			}
			requeued++
		}
	}
	if err := riverjob.DiscardRunning(ctx, tx, jobIDs, "ordo reaper: the worker running this job was declared dead"); err != nil {
		return 0, 0, nil, fmt.Errorf("discard jobs of dead workers: %w", err)
	}
	if err := s.settle(ctx, tx); err != nil {
		return 0, 0, nil, err
	}
	return crashed, requeued, s, nil
}
