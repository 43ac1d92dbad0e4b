package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
)

// CancelChannel is the NOTIFY channel on which RunCancel announces a flow
// run being cancelled; the payload is the flow run id. Workers listen on it
// and stop that run's attempts they are running.
const CancelChannel = "ordo_cancel"

// errRunCancelled is the cause of an attempt's context ending because its
// flow run was cancelled.
var errRunCancelled = errors.New("the flow run was cancelled")

// commandAttempts is how many times a cancel, retry or reaper pass is
// decided again after losing a race with a worker.
const commandAttempts = 10

// RunCancel cancels a flow run. In one transaction: the run goes
// CANCELLING, its task runs that are not running (pending, waiting for a
// retry) are cancelled, its queued jobs are cancelled, its running sub-flow
// runs are cancelled the same way, and a notification on CancelChannel
// tells the workers to stop its running attempts; each worker then records
// its stopped attempt as cancelled. When nothing of the run is running, it
// ends CANCELLED at once; otherwise with the last stopped attempt. Workers
// also look for cancelled runs every WorkerOptions.CancelCheckInterval, so
// a lost notification delays the stop but does not prevent it.
//
// Cancelling a run that is being cancelled asks the workers again; a run
// that has ended is a conflict.
func (s *Service) RunCancel(ctx context.Context, flowRunID uuid.UUID, actor string) (domain.FlowRun, error) {
	if actor == "" {
		actor = "system"
	}
	var (
		run domain.FlowRun
		st  *settlement
	)
	err := s.retryConflicts(ctx, func(tx pgx.Tx) error {
		st = s.eng.newSettlement(domain.Metadata{Actor: actor})
		var notify []uuid.UUID
		if err := st.cancelRun(ctx, tx, flowRunID, "cancelled by "+actor, 0, &notify); err != nil {
			return err
		}
		if err := st.settle(ctx, tx); err != nil {
			return err
		}
		if len(notify) > 0 {
			ids := make([]string, len(notify))
			for i, id := range notify {
				ids[i] = id.String()
			}
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id`, CancelChannel, ids); err != nil {
				return fmt.Errorf("notify workers: %w", err)
			}
		}
		run, _ = st.u.flowRun(flowRunID)
		return nil
	})
	if err != nil {
		return domain.FlowRun{}, err
	}
	wakeAfterCommit(ctx, s.pool, st, slog.Default())
	return run, nil
}

// maxSubflowDepth bounds how deep cancellation follows sub-flow runs.
const maxSubflowDepth = 32

// cancelRun records the cancellation of one flow run and of what of it is
// not running, and recurses into its running sub-flow runs. The ids of the
// runs with attempts still running are added to notify.
func (s *settlement) cancelRun(ctx context.Context, tx pgx.Tx, id uuid.UUID, reason string, depth int, notify *[]uuid.UUID) error {
	fr, _, err := s.loadFlowRun(ctx, tx, id)
	if err != nil {
		return err
	}
	meta := s.metaFor(id, reason)
	if _, err := s.u.decideFlowRun(id, domain.CancelFlowRun{}, meta); err != nil {
		return err
	}
	ids := make([]uuid.UUID, 0, len(fr.TaskRunIDs))
	for _, t := range fr.Flow.Tasks {
		ids = append(ids, fr.TaskRunIDs[t.Name])
	}
	if err := s.u.loadTaskRuns(ctx, tx, ids); err != nil {
		return err
	}
	running := false
	for _, trID := range ids {
		tr := s.u.taskRun(trID)
		switch tr.State.Type {
		case domain.Pending, domain.Scheduled:
			if _, err := s.decide(trID, domain.CancelTaskRun{}, meta); err != nil {
				return err
			}
		case domain.Running:
			if tr.ChildFlowRunID == nil {
				running = true
				continue
			}
			child, _, err := s.loadFlowRun(ctx, tx, *tr.ChildFlowRunID)
			if err != nil {
				return err
			}
			if child.State.Type.Terminal() || depth >= maxSubflowDepth {
				continue // its end is already on its way to the parent
			}
			if err := s.cancelRun(ctx, tx, child.ID, "parent flow run "+fr.Name+" was cancelled", depth+1, notify); err != nil {
				return err
			}
		}
	}
	// Nothing of the run is queued any more: fan-in rows never queue, jobs
	// already queued are cancelled.
	if _, err := tx.Exec(ctx, `
WITH locked AS (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM task_run_fanin WHERE flow_run_id = $1 ORDER BY task_run_id FOR UPDATE
    ) l
)
UPDATE task_run_fanin SET cancelled = true
WHERE flow_run_id = $1 AND NOT cancelled AND (SELECT n FROM locked) >= 0`, id); err != nil {
		return fmt.Errorf("cancel waiting task runs: %w", err)
	}
	rows, err := tx.Query(ctx, `
UPDATE river_job SET state = 'cancelled', finalized_at = now()
WHERE args ->> 'flow_run_id' = $1::text AND kind = $2 AND state IN ('available', 'scheduled', 'retryable', 'pending')
RETURNING id`,
		id, KindTaskRun)
	if err != nil {
		return fmt.Errorf("cancel queued jobs: %w", err)
	}
	cancelled, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("cancel queued jobs: %w", err)
	}
	woken, err := releaseSlots(ctx, tx, cancelled)
	if err != nil {
		return err
	}
	for _, q := range woken {
		s.wakeQueue(q)
	}
	if running {
		*notify = append(*notify, id)
	}
	return nil
}

// retryConflicts runs fn in a transaction, again when it lost a race with
// another writer of the same streams.
func (s *Service) retryConflicts(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return retryingTx(ctx, s.store, fn)
}

// attempts are the attempts a worker is running, by flow run, so that a
// cancellation can stop them.
type attempts struct {
	mu    sync.Mutex
	byRun map[uuid.UUID]map[int64]context.CancelCauseFunc // flow run -> job id -> stop
}

func newAttempts() *attempts {
	return &attempts{byRun: map[uuid.UUID]map[int64]context.CancelCauseFunc{}}
}

func (a *attempts) add(run uuid.UUID, job int64, stop context.CancelCauseFunc) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.byRun[run] == nil {
		a.byRun[run] = map[int64]context.CancelCauseFunc{}
	}
	a.byRun[run][job] = stop
}

func (a *attempts) remove(run uuid.UUID, job int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.byRun[run], job)
	if len(a.byRun[run]) == 0 {
		delete(a.byRun, run)
	}
}

// has reports whether an attempt of the flow run runs here.
func (a *attempts) has(run uuid.UUID) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.byRun[run]) > 0
}

func (a *attempts) runs() []uuid.UUID {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := make([]uuid.UUID, 0, len(a.byRun))
	for id := range a.byRun {
		ids = append(ids, id)
	}
	return ids
}

// stop stops every attempt of run and returns how many there were.
func (a *attempts) stop(run uuid.UUID) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, stop := range a.byRun[run] {
		stop(errRunCancelled)
	}
	return len(a.byRun[run])
}

// watchCancellations stops the attempts of cancelled runs: it listens on
// CancelChannel (reconnecting when the connection drops) and, in case a
// notification is lost, checks the runs of the running attempts every
// CancelCheckInterval.
func (w *Worker) watchCancellations() {
	if !w.opts.noCancelListen {
		w.bg.Go(w.listenCancellations)
	}
	t := time.NewTicker(w.opts.CancelCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
		if err := w.checkCancellations(w.ctx); err != nil && w.ctx.Err() == nil {
			w.opts.Logger.Warn("check for cancelled flow runs", "err", err)
		}
	}
}

func (w *Worker) listenCancellations() {
	backoff := 100 * time.Millisecond
	for w.ctx.Err() == nil {
		began := time.Now()
		err := w.listenOnce()
		if w.ctx.Err() != nil {
			return
		}
		if time.Since(began) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		w.opts.Logger.Warn("listen for cancelled flow runs; reconnecting", "err", err, "in", backoff)
		select {
		case <-w.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (w *Worker) listenOnce() error {
	pc, err := w.pool.Acquire(w.ctx)
	if err != nil {
		return err
	}
	conn := pc.Hijack() // held for as long as it listens
	defer conn.Close(context.Background())
	if _, err := conn.Exec(w.ctx, "LISTEN "+CancelChannel); err != nil {
		return err
	}
	// What was cancelled while no one listened.
	if err := w.checkCancellations(w.ctx); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(w.ctx)
		if err != nil {
			return err
		}
		if id, err := uuid.Parse(n.Payload); err == nil {
			if k := w.running.stop(id); k > 0 {
				w.opts.Logger.Info("flow run cancelled: stopping its attempts", "flow_run_id", id, "attempts", k)
			}
		}
	}
}

// checkCancellations stops the running attempts of runs that are being
// cancelled or were cancelled (and not retried since).
func (w *Worker) checkCancellations(ctx context.Context) error {
	runs := w.running.runs()
	if len(runs) == 0 {
		return nil
	}
	slices.SortFunc(runs, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	rows, err := w.pool.Query(ctx, `
SELECT DISTINCT ON (stream_id) stream_id, type FROM events
WHERE stream_id = ANY($1) AND type IN ('FlowRunCancelling', 'FlowRunCancelled', 'FlowRunRetried')
ORDER BY stream_id, version DESC`, runs)
	if err != nil {
		return fmt.Errorf("read cancellations: %w", err)
	}
	type last struct {
		id  uuid.UUID
		typ string
	}
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (last, error) {
		var l last
		err := r.Scan(&l.id, &l.typ)
		return l, err
	})
	if err != nil {
		return fmt.Errorf("read cancellations: %w", err)
	}
	for _, l := range found {
		if l.typ == (domain.FlowRunRetried{}).EventType() {
			continue
		}
		if k := w.running.stop(l.id); k > 0 {
			w.opts.Logger.Info("flow run cancelled: stopping its attempts", "flow_run_id", l.id, "attempts", k)
		}
	}
	return nil
}
