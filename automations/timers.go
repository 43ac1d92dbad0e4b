package automations

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// Firing the windows of absence triggers at their deadline. A window fires
// only once the consumer has read the log up to its deadline, so that the
// event that would have closed it in time (a run ending, a completion) is
// never missed; it fires under the checkpoint's row lock, through the same
// recordFirings as any firing, with the id of the event that opened it, so
// that two servers or a retry cannot fire it twice.

// timerBatch is the most windows fired in one transaction.
const timerBatch = 100

// timer is a row of automation_timers.
type timer struct {
	automation, subject uuid.UUID
	kind                string
	position            int64
	openedType          string
	since, deadline     time.Time
	deploymentName      string
}

// runTimers fires the windows that are due, every PollInterval, until ctx
// ends.
func (c *Consumer) runTimers(ctx context.Context) {
	t := time.NewTicker(c.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for {
			n, err := c.fireDue(ctx)
			if err != nil {
				if ctx.Err() == nil {
					c.opts.Logger.Warn("automation windows not fired; trying again", "err", err)
				}
				break
			}
			if n < timerBatch {
				break
			}
		}
	}
}

// fireDue fires or drops the windows due by now that the consumer has read
// past, and returns how many it handled.
func (c *Consumer) fireDue(ctx context.Context) (int, error) {
	var due bool
	if err := c.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM automation_timers WHERE deadline <= now())`).Scan(&due); err != nil || !due {
		return 0, err
	}
	var n, fired int
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		cp, err := lockCheckpoint(ctx, tx)
		if err != nil {
			return err
		}
		horizon, err := c.horizon(ctx, tx, cp)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `
SELECT automation_id, subject, kind, opened_position, opened_type, since, deadline, deployment_name FROM automation_timers
WHERE deadline <= least(now(), $1) ORDER BY deadline LIMIT $2 FOR UPDATE`, horizon, timerBatch)
		if err != nil {
			return fmt.Errorf("read due automation windows: %w", err)
		}
		var ts []timer
		var t timer
		_, err = pgx.ForEachRow(rows, []any{&t.automation, &t.subject, &t.kind, &t.position, &t.openedType, &t.since, &t.deadline, &t.deploymentName}, func() error {
			ts = append(ts, t)
			return nil
		})
		if err != nil {
			return fmt.Errorf("read due automation windows: %w", err)
		}
		n = len(ts)
		var fs []firing
		var done []op
		for _, t := range ts {
			f, ok, err := c.timerFiring(ctx, tx, t)
			if err != nil {
				return err
			}
			if ok {
				fs = append(fs, f)
			}
			done = append(done, op{`DELETE FROM automation_timers WHERE automation_id = $1 AND subject = $2`, []any{t.automation, t.subject}})
		}
		fired = len(fs)
		if err := recordFirings(ctx, tx, c.store, c.river, "automations", fs); err != nil {
			return err
		}
		return runOps(ctx, tx, done)
	})
	if err == nil && fired > 0 {
		c.store.Committed()
	}
	return n, err
}

// horizon returns the time up to which the consumer at cp has read the
// log: the end of time when it has read all that is stable, else when the
// event at cp was recorded.
func (c *Consumer) horizon(ctx context.Context, tx pgx.Tx, cp eventstore.Checkpoint) (time.Time, error) {
	stable, ok, err := c.store.StableHead(ctx, tx)
	if err != nil {
		return time.Time{}, err
	}
	if !ok || !cp.Less(stable) {
		return time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), nil
	}
	envs, err := c.store.ReadBetween(ctx, tx, eventstore.Checkpoint{TransactionID: cp.TransactionID, Position: cp.Position - 1}, cp, 1)
	if err != nil || len(envs) == 0 || envs[0].Position != cp.Position {
		return time.Time{}, err
	}
	return envs[0].RecordedAt, nil
}

// timerFiring returns the firing of a due window, and false when it must
// not fire: its automation is paused, deleted or now of another kind, or
// the window's opening event fired it already (a gap fired before a pause).
func (c *Consumer) timerFiring(ctx context.Context, tx pgx.Tx, t timer) (firing, bool, error) {
	a := domain.Automation{ID: t.automation}
	var spec []byte
	err := tx.QueryRow(ctx, `SELECT spec, paused, deleted, version FROM automations WHERE id = $1`, t.automation).Scan(&spec, &a.Paused, &a.Deleted, &a.Stream)
	if errors.Is(err, pgx.ErrNoRows) {
		return firing{}, false, nil
	}
	if err != nil {
		return firing{}, false, fmt.Errorf("read automation: %w", err)
	}
	if err := json.Unmarshal(spec, &a.Spec); err != nil {
		return firing{}, false, fmt.Errorf("read automation %s: %w", a.ID, err)
	}
	if a.Paused || a.Deleted || a.Spec.Trigger.Type != t.kind {
		return firing{}, false, nil
	}
	var fired bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM automation_firings WHERE automation_id = $1 AND trigger_position = $2)`, a.ID, t.position).Scan(&fired); err != nil || fired {
		return firing{}, false, err
	}
	f := firing{automation: a, at: t.deadline, fired: domain.AutomationFired{AutomationID: a.ID, TriggerPosition: t.position, TriggerType: t.openedType, Trigger: t.kind,
		Window: &domain.FiringWindow{Since: t.since, Deadline: t.deadline, Seconds: a.Spec.Trigger.Seconds}}}
	if t.kind == domain.TriggerNotCompletedWithin {
		f.fired.Window.DeploymentID, f.fired.Window.DeploymentName = t.subject, t.deploymentName
		f.run = domain.RunContext{DeploymentName: t.deploymentName}
		return f, true, nil
	}
	// a run's window: its state at the deadline, and its flow run
	envs, err := c.store.ReadStream(ctx, tx, t.subject, 0)
	if err != nil {
		return firing{}, false, err
	}
	flowRun := t.subject
	for _, e := range envs {
		if st, ok := domain.StateReached(e.Event, e.RecordedAt); ok && !e.RecordedAt.After(t.deadline) {
			f.fired.State = st
		}
		if tc, ok := e.Event.(domain.TaskRunCreated); ok {
			flowRun, f.fired.TaskRunID = tc.FlowRunID, &t.subject
		}
	}
	if flowRun != t.subject {
		if envs, err = c.store.ReadStream(ctx, tx, flowRun, 0); err != nil {
			return firing{}, false, err
		}
	}
	for _, e := range envs {
		if fc, ok := e.Event.(domain.FlowRunCreated); ok {
			info := runInfoOf(flowRun, fc)
			f.run, f.runName = info.RunContext, info.name
			f.fired.Window.DeploymentID, f.fired.Window.DeploymentName = info.deploymentID, info.DeploymentName
		}
	}
	f.fired.FlowRunID = flowRun
	return f, true, nil
}

// runOps runs a batch's window and streak statements in tx, in order.
func runOps(ctx context.Context, tx pgx.Tx, ops []op) error {
	if len(ops) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, o := range ops {
		b.Queue(o.sql, o.args...)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("write automation windows: %w", err)
	}
	return nil
}
