package automations

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/riverjob"
)

// deliveryJobSQL finds the River job of a delivery ($1 firing, $2 action);
// the args' GIN index serves it.
var deliveryJobSQL = riverjob.LastJobByArgsSQL(`'`+KindDelivery+`'`, `jsonb_build_object('firing_id', $1::text, 'action', $2::int)`)

// DeliveryRetry re-queues a dead delivery of the automation: its River job
// is made available again with a fresh budget of RetryAttempts, so that it
// keeps its firing id (the receiver's idempotency key) and its attempts go
// on being numbered and recorded after the earlier ones. A delivery that
// is not dead is a conflict.
func (s *Service) DeliveryRetry(ctx context.Context, automationID, firingID uuid.UUID, action int) (domain.Delivery, error) {
	// The worker records a delivery dead before River finishes its job:
	// a retry right then waits, a bounded time, for the job to finish.
	var err error
	for wait := time.Now().Add(10 * time.Second); ; {
		err = s.retry(ctx, automationID, firingID, action)
		if !errors.Is(err, errJobRunning) || time.Now().After(wait) {
			break
		}
		select {
		case <-ctx.Done():
			return domain.Delivery{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if errors.Is(err, errJobRunning) {
		err = domain.Errorf(domain.CodeConflict, "the delivery's job is still running: try again")
	}
	if err != nil {
		return domain.Delivery{}, err
	}
	list, err := s.deliveries(ctx, `WHERE d.firing_id = $1 AND d.action = $2`, firingID, action)
	if err != nil || len(list) == 0 {
		return domain.Delivery{}, errors.Join(err, errors.New("the retried delivery is gone"))
	}
	return list[0], nil
}

// errJobRunning: a dead delivery's job is not finished yet.
var errJobRunning = errors.New("delivery job running")

// retry makes a dead delivery's job available again, in one transaction.
func (s *Service) retry(ctx context.Context, automationID, firingID uuid.UUID, action int) error {
	return s.store.InTx(ctx, func(tx pgx.Tx) error {
		var status string
		err := tx.QueryRow(ctx, `SELECT status FROM automation_deliveries WHERE firing_id = $1 AND action = $2 AND automation_id = $3 FOR UPDATE`,
			firingID, action, automationID).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			return domain.Errorf(domain.CodeNotFound, "automation %s has no delivery of firing %s, action %d", automationID, firingID, action)
		}
		if err != nil {
			return fmt.Errorf("read delivery: %w", err)
		}
		if status != "dead" {
			return domain.Errorf(domain.CodeConflict, "the delivery is %s: only a dead delivery is retried", status)
		}
		var jobID int64
		var state string
		err = tx.QueryRow(ctx, deliveryJobSQL+` FOR UPDATE`, firingID.String(), action).Scan(&jobID, &state)
		if errors.Is(err, pgx.ErrNoRows) {
			return domain.Errorf(domain.CodeConflict, "the delivery's job is gone (finished jobs are removed after some days): it cannot be retried")
		}
		if err != nil {
			return fmt.Errorf("find delivery job: %w", err)
		}
		if state == "running" {
			return errJobRunning
		}
		if _, err := s.river.JobRetryTx(ctx, tx, jobID); err != nil {
			return fmt.Errorf("retry delivery job: %w", err)
		}
		if err := riverjob.AllowAttempts(ctx, tx, jobID, s.opts.RetryAttempts); err != nil {
			return fmt.Errorf("retry delivery job: %w", err)
		}
		_, err = tx.Exec(ctx, `UPDATE automation_deliveries SET status = 'pending', updated_at = now() WHERE firing_id = $1 AND action = $2`, firingID, action)
		return err
	})
}

// RunFirings returns the firings recorded for a flow run (its own events
// and its task runs'), oldest first, each with its deliveries.
func (s *Service) RunFirings(ctx context.Context, runID uuid.UUID) ([]domain.RunFiring, error) {
	rows, err := s.store.Pool().Query(ctx, `
SELECT f.id, f.automation_id, coalesce(a.name, ''), f.trigger_position, f.trigger_type, f.task_run_id, f.created_at
FROM automation_firings f LEFT JOIN automations a ON a.id = f.automation_id
WHERE f.flow_run_id = $1 ORDER BY f.created_at, f.id LIMIT 500`, runID)
	if err != nil {
		return nil, fmt.Errorf("list firings: %w", err)
	}
	firings, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (domain.RunFiring, error) {
		var f domain.RunFiring
		err := r.Scan(&f.FiringID, &f.AutomationID, &f.AutomationName, &f.TriggerPosition, &f.TriggerType, &f.TaskRunID, &f.CreatedAt)
		f.Deliveries = []domain.Delivery{}
		return f, err
	})
	if err != nil || len(firings) == 0 {
		return firings, err
	}
	deliveries, err := s.deliveries(ctx, `WHERE f.flow_run_id = $1 ORDER BY d.firing_id, d.action`, runID)
	if err != nil {
		return nil, err
	}
	index := make(map[uuid.UUID]int, len(firings))
	for i, f := range firings {
		index[f.FiringID] = i
	}
	for _, d := range deliveries {
		if i, ok := index[d.FiringID]; ok {
			firings[i].Deliveries = append(firings[i].Deliveries, d)
		}
	}
	return firings, nil
}
