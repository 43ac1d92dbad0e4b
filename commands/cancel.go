package commands

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/riverjob"
)

// CancelChannel is the NOTIFY channel on which RunCancel announces a flow
// run being cancelled; the payload is the flow run id. Workers listen on it
// and stop that run's attempts they are running.
const CancelChannel = "ordo_cancel"

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
	err := retryTx(ctx, s.store, func(tx pgx.Tx) error {
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
	cancelled, err := riverjob.CancelQueued(ctx, tx, id)
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

// cancelNotStartedTx cancels the runs of ids that no task of has started
// (SCHEDULED, PENDING or CANCELLING with a run count of 0): FlowRunCancelled
// and TaskRunCancelled (not run) for each of their task runs, with meta's
// reason; their queued River jobs are cancelled, their fan-in rows marked
// cancelled, their progress set to finished, their slots freed and their
// scheduled_runs rows settled, all in tx. Runs that started are left alone.
// It returns the runs it cancelled. deploymentID, when not nil, is the
// deployment whose slot lock is taken first.
func cancelNotStartedTx(ctx context.Context, tx pgx.Tx, store *eventstore.Store, deploymentID uuid.UUID, ids []uuid.UUID, meta domain.Metadata) ([]uuid.UUID, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if deploymentID != uuid.Nil {
		if err := lockDeploymentSlots(ctx, tx, deploymentID); err != nil {
			return nil, err
		}
	}
	runs, err := readFlowRuns(ctx, store, tx, ids)
	if err != nil {
		return nil, err
	}
	u := newUnitOfWork(store)
	var (
		cancelled []uuid.UUID
		taskRuns  []uuid.UUID
		metas     = map[uuid.UUID]domain.Metadata{}
	)
	for _, id := range ids {
		fr := runs[id]
		switch fr.State.Type {
		case domain.Scheduled, domain.Pending, domain.Cancelling:
		default:
			continue
		}
		if fr.RunCount > 0 {
			continue
		}
		m := meta
		m.CorrelationID = id.String()
		metas[id] = m
		u.putFlowRun(fr)
		if _, err := u.decideFlowRun(id, domain.FinishFlowRun{Outcome: domain.Cancelled, Message: meta.Reason}, m); err != nil {
			return nil, err
		}
		cancelled = append(cancelled, id)
		for _, tr := range fr.TaskRunIDs {
			taskRuns = append(taskRuns, tr)
		}
	}
	if len(cancelled) == 0 {
		return nil, nil
	}
	if err := u.loadTaskRuns(ctx, tx, taskRuns); err != nil {
		return nil, err
	}
	for _, id := range taskRuns {
		tr := u.taskRun(id)
		if _, err := u.decideTaskRun(id, domain.CancelTaskRun{NotRun: true}, metas[tr.FlowRunID]); err != nil {
			return nil, err
		}
	}
	if err := u.flush(ctx, tx); err != nil {
		return nil, err
	}
	batch := &pgx.Batch{}
	for _, id := range cancelled {
		riverjob.QueueCancelQueued(batch, id)
	}
	batch.Queue(`UPDATE task_run_fanin SET cancelled = true WHERE flow_run_id = ANY($1)`, cancelled)
	batch.Queue(`UPDATE flow_run_progress SET task_runs_unfinished = 0, updated_at = now() WHERE flow_run_id = ANY($1)`, cancelled)
	batch.Queue(`DELETE FROM deployment_run_slots WHERE flow_run_id = ANY($1)`, cancelled)
	batch.Queue(`UPDATE scheduled_runs SET state = 'done' WHERE flow_run_id = ANY($1)`, cancelled)
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return nil, fmt.Errorf("clean up cancelled runs: %w", err)
	}
	return cancelled, nil
}
