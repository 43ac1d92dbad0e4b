package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// reaperLockKey is the advisory lock a reaper pass holds for its
// transaction ("ordoreap"): with several servers running a reaper, one pass
// works at a time and the others skip.
const reaperLockKey int64 = 0x6f72646f72656170

// ReaperOptions tune a Reaper. The zero value of each field means its
// default.
type ReaperOptions struct {
	// Interval is how often the reaper looks for dead workers. Defaults to
	// 5s.
	Interval time.Duration
	// DeadAfter is how old a worker's last heartbeat must be for the worker
	// to be declared dead. It must be well above the workers'
	// HeartbeatInterval. Defaults to 15s: with the defaults, a worker killed
	// mid-task has its attempts recorded as crashed within 25 s.
	DeadAfter time.Duration
	// Logger receives what the reaper does. Defaults to slog.Default().
	Logger *slog.Logger
}

func (o *ReaperOptions) validate() error {
	p := &domain.Problems{Message: "invalid reaper options"}
	if o.Interval < 0 {
		p.Add("Interval", "must not be negative")
	}
	if o.DeadAfter < 0 {
		p.Add("DeadAfter", "must not be negative")
	}
	return p.Err()
}

// Reaper recovers from workers that died (SIGKILL, a lost machine, a
// network cut): a worker whose heartbeat is older than DeadAfter is declared
// dead, and every attempt it was running is recorded as crashed
// (FailTaskRun with Crashed): the task run's retry policy then queues a new
// attempt, which another worker takes, or the task run ends CRASHED and its
// flow run with it. The dead worker's River jobs are discarded in the same
// transaction, so River never works them again, and an attempt it had
// fetched but not started yet is queued again. If the worker was not dead
// after all and reports a result later, that result is refused (and
// recorded as refused).
//
// Any number of processes may run a reaper: each pass takes a Postgres
// advisory lock for its transaction, and passes that do not get it skip.
// A reaper also deletes expired cache entries, and frees the work queue
// slots that no running attempt uses (see sweepQueueSlots).
//
// It cannot stop the processes of a dead worker's tasks on other hosts;
// on the worker's own host the kernel kills a task whose worker died (see
// taskProcAttr), though not the processes that task started in turn.
type Reaper struct {
	pool *pgxpool.Pool
	eng  *engine
	opts ReaperOptions
}

// NewReaper returns a reaper; Run runs it.
func NewReaper(pool *pgxpool.Pool, store *eventstore.Store, opts ReaperOptions) (*Reaper, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if opts.Interval == 0 {
		opts.Interval = 5 * time.Second
	}
	if opts.DeadAfter == 0 {
		opts.DeadAfter = 15 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	client, err := NewInsertClient(pool)
	if err != nil {
		return nil, err
	}
	return &Reaper{pool: pool, eng: newEngine(store, client), opts: opts}, nil
}

// Run reaps every Interval until ctx ends. Errors are logged and the next
// pass tries again.
func (r *Reaper) Run(ctx context.Context) error {
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		if _, err := r.Reap(ctx); err != nil && ctx.Err() == nil {
			r.opts.Logger.Error("reaper", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// ReapResult says what one pass did.
type ReapResult struct {
	Skipped  bool // another reaper holds the lock
	Workers  int  // workers declared dead
	Crashed  int  // attempts recorded as crashed
	Requeued int  // jobs of dead workers queued again
	Slots    int  // work queue slots freed that no running attempt used
}

// reapedJob is a running River job of a dead worker.
type reapedJob struct {
	id     int64
	queue  string
	args   TaskRunArgs
	worker string
}

// Reap makes one pass, in one transaction.
func (r *Reaper) Reap(ctx context.Context) (ReapResult, error) {
	var (
		res     ReapResult
		settled *settlement
	)
	err := retryingTx(ctx, r.eng.store, func(tx pgx.Tx) error {
		res, settled = ReapResult{}, nil
		var locked bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, reaperLockKey).Scan(&locked); err != nil {
			return fmt.Errorf("take the reaper lock: %w", err)
		}
		if !locked {
			res.Skipped = true
			return nil
		}
		rows, err := tx.Query(ctx, `
UPDATE workers SET dead_at = now()
WHERE stopped_at IS NULL AND dead_at IS NULL AND last_heartbeat_at < now() - make_interval(secs => $1)
RETURNING name`, r.opts.DeadAfter.Seconds())
		if err != nil {
			return fmt.Errorf("declare dead workers: %w", err)
		}
		dead, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("declare dead workers: %w", err)
		}
		res.Workers = len(dead)
		for _, name := range dead {
			r.opts.Logger.Warn("worker declared dead: no heartbeat", "worker", name, "dead_after", r.opts.DeadAfter)
		}
		rows, err = tx.Query(ctx, `
SELECT j.id, j.queue, j.args, w.name
FROM river_job j
JOIN workers w ON w.id::text = j.attempted_by[cardinality(j.attempted_by)]
WHERE j.state = 'running' AND j.kind = $1 AND (w.dead_at IS NOT NULL OR w.stopped_at IS NOT NULL)
ORDER BY j.id
FOR UPDATE OF j SKIP LOCKED`, KindTaskRun)
		if err != nil {
			return fmt.Errorf("find jobs of dead workers: %w", err)
		}
		jobs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (reapedJob, error) {
			var j reapedJob
			var args []byte
			if err := row.Scan(&j.id, &j.queue, &args, &j.worker); err != nil {
				return j, err
			}
			return j, json.Unmarshal(args, &j.args)
		})
		if err != nil {
			return fmt.Errorf("find jobs of dead workers: %w", err)
		}
		if len(jobs) > 0 {
			if res.Crashed, res.Requeued, settled, err = r.reapJobs(ctx, tx, jobs); err != nil {
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
	wakeAfterCommit(ctx, r.pool, settled, r.opts.Logger)
	// After the dead workers' jobs are discarded: their slots go too.
	res.Slots, err = sweepQueueSlots(ctx, r.pool, r.opts.Logger)
	return res, err
}

// reapJobs records the attempts of dead workers' jobs as crashed, queues
// again the jobs whose attempt had not started, and discards the jobs.
func (r *Reaper) reapJobs(ctx context.Context, tx pgx.Tx, jobs []reapedJob) (crashed, requeued int, s *settlement, err error) {
	s = r.eng.newSettlement(domain.Metadata{Actor: "reaper"})
	var ids []uuid.UUID
	live := map[int64]bool{}
	for _, j := range jobs {
		if _, _, err := s.loadFlowRun(ctx, tx, j.args.FlowRunID); err != nil {
			if domain.ErrorCode(err) == domain.CodeNotFound {
				continue
			}
			return 0, 0, nil, err
		}
		live[j.id] = true
		ids = append(ids, j.args.TaskRunID)
	}
	if err := s.u.loadTaskRuns(ctx, tx, ids); err != nil {
		return 0, 0, nil, err
	}
	jobIDs := make([]int64, 0, len(jobs))
	for _, j := range jobs {
		jobIDs = append(jobIDs, j.id)
		if !live[j.id] {
			continue
		}
		a := j.args
		tr := s.u.taskRun(a.TaskRunID)
		again := river.InsertManyParams{Args: a, InsertOpts: &river.InsertOpts{Queue: j.queue}}
		switch {
		case a.ChildFlowRunID != uuid.Nil:
			// reporting a sub-flow's end: report it again
			if err := s.addJob(again); err != nil {
				return 0, 0, nil, err
			}
			requeued++
		case tr.State.Type == domain.Running && tr.Attempt == a.Attempt && tr.ChildFlowRunID == nil:
			msg := fmt.Sprintf("worker %s stopped sending heartbeats for %s and was declared dead: attempt %d was lost", j.worker, r.opts.DeadAfter, a.Attempt)
			cmd := domain.FailTaskRun{
				AttemptFailure: domain.AttemptFailure{Attempt: a.Attempt, Error: msg, Crashed: true},
				Now:            s.now, Random: rand.Float64(),
			}
			if _, err := s.decide(a.TaskRunID, cmd, s.metaFor(a.FlowRunID, "worker "+j.worker+" declared dead")); err != nil {
				return 0, 0, nil, err
			}
			crashed++
			r.opts.Logger.Warn("attempt of a dead worker recorded as crashed", "worker", j.worker, "task_run_id", a.TaskRunID, "attempt", a.Attempt)
		case (tr.State.Type == domain.Pending || tr.State.Type == domain.Scheduled) && tr.Attempt == a.Attempt-1:
			// fetched by the dead worker but never started
			if err := s.addJob(again); err != nil {
				return 0, 0, nil, err
			}
			requeued++
		}
	}
	if _, err := tx.Exec(ctx, `
UPDATE river_job
SET state = 'discarded', finalized_at = now(),
    errors = array_append(errors, jsonb_build_object('at', now(), 'attempt', attempt,
        'error', 'ordo reaper: the worker running this job was declared dead', 'trace', ''))
WHERE id = ANY($1) AND state = 'running'`, jobIDs); err != nil {
		return 0, 0, nil, fmt.Errorf("discard jobs of dead workers: %w", err)
	}
	if err := s.settle(ctx, tx); err != nil {
		return 0, 0, nil, err
	}
	return crashed, requeued, s, nil
}

// retryingTx runs fn in a transaction of store, again when it lost a race
// with another writer of the same streams.
func retryingTx(ctx context.Context, store *eventstore.Store, fn func(tx pgx.Tx) error) error {
	var err error
	for range commandAttempts {
		if err = store.InTx(ctx, fn); !retryable(err) {
			return err
		}
	}
	return domain.Errorf(domain.CodeConflict, "changed concurrently %d times; try again: %v", commandAttempts, err)
}
