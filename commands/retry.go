package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/riverjob"
)

// RunRetry runs the failed part of a finished run again: a FAILED, CRASHED
// or CANCELLED run gets FlowRunRetried (it is SCHEDULED, AwaitingRetry,
// until a task starts), each of its failed, crashed or cancelled task runs
// (those that never ran too) goes back to PENDING with TaskRunReset, its
// fan-in counts and progress row are restored, and the reset task runs whose
// upstream tasks all completed are queued, in one transaction. Completed
// task runs keep their results and do not run again. A task run's attempts
// go on counting: its next attempt is the one after its last.
func (s *Service) RunRetry(ctx context.Context, flowRunID uuid.UUID, actor string) (domain.FlowRun, error) {
	if actor == "" {
		actor = "system"
	}
	var run domain.FlowRun
	err := retryTx(ctx, s.store, func(tx pgx.Tx) error {
		var err error
		run, err = s.runRetryTx(ctx, tx, flowRunID, actor)
		return err
	})
	if err != nil {
		return domain.FlowRun{}, err
	}
	return run, nil
}

func (s *Service) runRetryTx(ctx context.Context, tx pgx.Tx, id uuid.UUID, actor string) (domain.FlowRun, error) {
	st := s.eng.newSettlement(domain.Metadata{Actor: actor})
	fr, _, err := st.loadFlowRun(ctx, tx, id)
	if err != nil {
		return domain.FlowRun{}, err
	}
	meta := st.metaFor(id, "retried by "+actor)
	ids := make([]uuid.UUID, 0, len(fr.Flow.Tasks))
	for _, t := range fr.Flow.Tasks {
		ids = append(ids, fr.TaskRunIDs[t.Name])
	}
	if err := st.u.loadTaskRuns(ctx, tx, ids); err != nil {
		return domain.FlowRun{}, err
	}
	var again []domain.TaskSpec
	for _, t := range fr.Flow.Tasks {
		switch st.u.taskRun(fr.TaskRunIDs[t.Name]).State.Type {
		case domain.Failed, domain.Crashed, domain.Cancelled:
			again = append(again, t)
		}
	}
	names := make([]string, len(again))
	for i, t := range again {
		names[i] = t.Name
	}
	if _, err := st.u.decideFlowRun(id, domain.RetryFlowRun{TaskNames: names}, meta); err != nil {
		return domain.FlowRun{}, err
	}
	if len(again) == 0 {
		return domain.FlowRun{}, domain.Errorf(domain.CodeConflict, "flow run %s has no failed, crashed or cancelled task run to run again", id)
	}
	var (
		fanin faninRows
		ready []string
	)
	for _, t := range again {
		if _, err := st.u.decideTaskRun(fr.TaskRunIDs[t.Name], domain.ResetTaskRun{}, meta); err != nil {
			return domain.FlowRun{}, err
		}
		var waiting int32
		for _, dep := range t.DependsOn {
			if st.u.taskRun(fr.TaskRunIDs[dep]).State.Type != domain.Completed {
				waiting++
			}
		}
		if len(t.DependsOn) > 0 {
			fanin.ids = append(fanin.ids, fr.TaskRunIDs[t.Name])
			fanin.remaining = append(fanin.remaining, waiting)
		}
		if waiting == 0 {
			ready = append(ready, t.Name)
		}
	}
	if err := st.u.flush(ctx, tx); err != nil {
		return domain.FlowRun{}, err
	}
	if len(fanin.ids) > 0 {
		if _, err := tx.Exec(ctx, `
INSERT INTO task_run_fanin (task_run_id, flow_run_id, remaining)
SELECT u.id, $3, u.remaining FROM unnest($1::uuid[], $2::int[]) AS u(id, remaining)
ORDER BY u.id
ON CONFLICT (task_run_id) DO UPDATE SET remaining = EXCLUDED.remaining, cancelled = false`,
			fanin.ids, fanin.remaining, id); err != nil {
			return domain.FlowRun{}, fmt.Errorf("restore fan-in: %w", err)
		}
	}
	tag, err := tx.Exec(ctx, `
UPDATE flow_run_progress
SET task_runs_unfinished = task_runs_unfinished + $2, task_runs_failed = 0, task_runs_crashed = 0,
    task_runs_cancelled = 0, failure = NULL, updated_at = now()
WHERE flow_run_id = $1`, id, len(again))
	if err != nil {
		return domain.FlowRun{}, fmt.Errorf("restore progress: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return domain.FlowRun{}, fmt.Errorf("flow run %s has no progress row", id)
	}
	fr, _ = st.u.flowRun(id)
	now := time.Now()
	jobs := make([]riverjob.Job, 0, len(ready))
	for _, name := range ready {
		jobs = append(jobs, st.index[id].job(fr, name, st.u.taskRun(fr.TaskRunIDs[name]).Attempt+1, now, now))
	}
	if err := s.enq.EnqueueTx(ctx, tx, jobs); err != nil {
		return domain.FlowRun{}, fmt.Errorf("queue task runs: %w", err)
	}
	return fr, nil
}
