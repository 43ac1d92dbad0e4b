package automations

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
)

// The consumer's side of absence and count triggers: the windows an event
// opens or closes (rows of automation_timers) and the failure streaks it
// moves (rows of automation_streaks), written as ops in the transaction
// that moves the checkpoint. timers.go fires the windows at their deadline.

// op is one statement of a batch's transaction, run in order after its
// firings are recorded.
type op struct {
	sql  string
	args []any
}

const (
	openWindowSQL = `
INSERT INTO automation_timers (automation_id, subject, kind, opened_position, opened_type, since, deadline, deployment_name)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (automation_id, subject) DO NOTHING`
	// a completion starts a deployment's window again
	restartWindowSQL = `
INSERT INTO automation_timers (automation_id, subject, kind, opened_position, opened_type, since, deadline, deployment_name)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (automation_id, subject) DO UPDATE SET opened_position = $4, opened_type = $5, since = $6, deadline = $7, deployment_name = $8`
	closeWindowsSQL = `DELETE FROM automation_timers WHERE subject = $1 AND kind = $2`
)

// streakKey is a consecutive_failures automation and a deployment.
type streakKey struct{ automation, deployment uuid.UUID }

type streak struct {
	failures int
	since    time.Time
	lastRun  uuid.UUID
}

// openWindow returns the op that opens a's window on subject, opened by
// the event at position (of type typ) at since.
func openWindow(sql string, a domain.Automation, subject uuid.UUID, position int64, typ string, since time.Time, deployment string) op {
	return op{sql, []any{a.ID, subject, a.Spec.Trigger.Type, position, typ, since, since.Add(a.Spec.Trigger.Window()), deployment}}
}

// kindsAdd and kindsRemove keep the live automations of each absence and
// count trigger kind; state triggers are in the index instead.
func (c *Consumer) kindsAdd(a domain.Automation) {
	if k := a.Spec.Trigger.Type; k != domain.TriggerState {
		c.kinds[k] = append(c.kinds[k], a.ID)
	}
}

func (c *Consumer) kindsRemove(a domain.Automation) {
	k := a.Spec.Trigger.Type
	if _, ok := c.kinds[k]; !ok {
		return
	}
	if c.kinds[k] = slices.DeleteFunc(c.kinds[k], func(id uuid.UUID) bool { return id == a.ID }); len(c.kinds[k]) == 0 {
		delete(c.kinds, k)
	}
}

// matching returns the live automations of a kind whose filter keeps rc.
func (c *Consumer) matching(kind string, rc domain.RunContext) []domain.Automation {
	var as []domain.Automation
	for _, id := range c.kinds[kind] {
		if a := c.autos[id]; a.Spec.Filter.Matches(rc) {
			as = append(as, a)
		}
	}
	return as
}

// loadStreaks reads the failure streaks as of the checkpoint.
func (c *Consumer) loadStreaks(ctx context.Context) error {
	c.streaks = map[streakKey]streak{}
	rows, err := c.pool.Query(ctx, `SELECT automation_id, deployment_id, failures, since, last_run_id FROM automation_streaks`)
	if err != nil {
		return fmt.Errorf("read automation streaks: %w", err)
	}
	var k streakKey
	var s streak
	_, err = pgx.ForEachRow(rows, []any{&k.automation, &k.deployment, &s.failures, &s.since, &s.lastRun}, func() error {
		c.streaks[k] = s
		return nil
	})
	if err != nil {
		return fmt.Errorf("read automation streaks: %w", err)
	}
	return nil
}

// matchWindows returns what a run's state event does to absence and count
// triggers: the windows it opens or closes, the streaks it moves, and the
// consecutive_failures firings it completes.
func (c *Consumer) matchWindows(env domain.Envelope, state domain.State) ([]firing, []op) {
	if len(c.kinds) == 0 {
		return nil, nil
	}
	info := c.runOf(env)
	var ops []op
	if slices.ContainsFunc(c.kinds[domain.TriggerRunningLongerThan], func(id uuid.UUID) bool { return c.autos[id].Spec.Trigger.Of == env.StreamType }) {
		if state.Type == domain.Running {
			for _, a := range c.matching(domain.TriggerRunningLongerThan, info.RunContext) {
				if a.Spec.Trigger.Of == env.StreamType {
					ops = append(ops, openWindow(openWindowSQL, a, env.StreamID, env.Position, env.Type, env.RecordedAt, ""))
				}
			}
		} else {
			ops = append(ops, op{closeWindowsSQL, []any{env.StreamID, domain.TriggerRunningLongerThan}})
		}
	}
	if env.StreamType != domain.StreamFlowRun {
		return nil, ops
	}
	if _, ok := c.kinds[domain.TriggerNotStartedWithin]; ok {
		if e, created := env.Event.(domain.FlowRunCreated); created {
			for _, a := range c.matching(domain.TriggerNotStartedWithin, info.RunContext) {
				ops = append(ops, openWindow(openWindowSQL, a, env.StreamID, env.Position, env.Type, e.ScheduledAt, ""))
			}
		} else if notWaiting(state) {
			ops = append(ops, op{closeWindowsSQL, []any{env.StreamID, domain.TriggerNotStartedWithin}})
		}
	}
	if state.Type == domain.Completed && info.deploymentID != uuid.Nil {
		for _, a := range c.matching(domain.TriggerNotCompletedWithin, info.RunContext) {
			ops = append(ops, openWindow(restartWindowSQL, a, info.deploymentID, env.Position, env.Type, env.RecordedAt, info.DeploymentName))
		}
	}
	var fs []firing
	if info.deploymentID == uuid.Nil {
		return nil, ops
	}
	for _, a := range c.matching(domain.TriggerConsecutiveFailures, info.RunContext) {
		k := streakKey{a.ID, info.deploymentID}
		switch state.Type {
		case domain.Completed:
			if _, ok := c.streaks[k]; ok {
				delete(c.streaks, k)
				ops = append(ops, op{`DELETE FROM automation_streaks WHERE automation_id = $1 AND deployment_id = $2`, []any{k.automation, k.deployment}})
			}
		case domain.Failed, domain.Crashed:
			s := c.streaks[k]
			if s.failures > 0 && s.lastRun == info.FlowRunID {
				continue // a retried run failing again is still one run
			}
			if s.failures == 0 {
				s.since = env.RecordedAt
			}
			s.failures++
			s.lastRun = info.FlowRunID
			c.streaks[k] = s
			ops = append(ops, op{`
INSERT INTO automation_streaks (automation_id, deployment_id, failures, since, last_run_id) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (automation_id, deployment_id) DO UPDATE SET failures = $3, since = $4, last_run_id = $5`, []any{k.automation, k.deployment, s.failures, s.since, s.lastRun}})
			if s.failures != a.Spec.Trigger.Count {
				continue
			}
			fired := domain.AutomationFired{AutomationID: a.ID, TriggerPosition: env.Position, TriggerType: env.Type, Trigger: domain.TriggerConsecutiveFailures,
				FlowRunID: info.FlowRunID, State: state,
				Window: &domain.FiringWindow{Since: s.since, Count: s.failures, DeploymentID: info.deploymentID, DeploymentName: info.DeploymentName}}
			fs = append(fs, firing{automation: a, fired: fired, run: info.RunContext, runName: info.name, at: env.RecordedAt})
		}
	}
	return fs, ops
}

// deploymentWindows opens the not_completed_within windows of a new
// deployment, and closes those of one deleted or changed so that their
// filter no longer keeps it.
func (c *Consumer) deploymentWindows(env domain.Envelope) []op {
	if _, ok := c.kinds[domain.TriggerNotCompletedWithin]; !ok {
		return nil
	}
	var spec domain.DeploymentSpec
	_, updated := env.Event.(domain.DeploymentUpdated)
	switch e := env.Event.(type) {
	case domain.DeploymentCreated:
		spec = e.Spec
	case domain.DeploymentUpdated:
		spec = e.Spec
	case domain.DeploymentDeleted:
		return []op{{closeWindowsSQL, []any{env.StreamID, domain.TriggerNotCompletedWithin}}}
	default:
		return nil
	}
	var ops []op
	for _, id := range c.kinds[domain.TriggerNotCompletedWithin] {
		a := c.autos[id]
		switch {
		case !a.Spec.Filter.Matches(deploymentContext(spec)):
			ops = append(ops, op{`DELETE FROM automation_timers WHERE automation_id = $1 AND subject = $2`, []any{a.ID, env.StreamID}})
		case !updated: // an updated deployment the filter now keeps waits for its next completion
			ops = append(ops, openWindow(openWindowSQL, a, env.StreamID, env.Position, env.Type, env.RecordedAt, spec.Name))
		}
	}
	return ops
}

// notWaiting reports whether a flow run in state is no longer waiting to
// start: it started, or it ends (a cancellation before it started).
func notWaiting(state domain.State) bool {
	return state.Type == domain.Running || state.Type == domain.Cancelling || state.Type.Terminal()
}

func deploymentContext(s domain.DeploymentSpec) domain.RunContext {
	return domain.RunContext{DeploymentName: s.Name, Tags: s.Tags, WorkQueue: s.WorkQueue, Flow: s.Flow.Name}
}

// automationWindows returns what an automation event does to its windows
// and streaks: a change, pause or deletion drops them; a creation, change
// or resumption opens the windows already open in the log (runs running or
// not started yet, deployments), so that it catches runs that began
// before it.
func (c *Consumer) automationWindows(ctx context.Context, env domain.Envelope, before, after domain.Automation) ([]op, error) {
	_, changed := env.Event.(domain.AutomationChanged)
	var ops []op
	if live(before) && before.Spec.Trigger.Type != domain.TriggerState && (changed || !live(after)) {
		ops = append(ops, op{`DELETE FROM automation_timers WHERE automation_id = $1`, []any{before.ID}},
			op{`DELETE FROM automation_streaks WHERE automation_id = $1`, []any{before.ID}})
		for k := range c.streaks {
			if k.automation == before.ID {
				delete(c.streaks, k)
			}
		}
	}
	if !live(after) || live(before) && !changed {
		return ops, nil
	}
	open, err := c.openWindows(ctx, after, env)
	return append(ops, open...), err
}

// openWindows finds, through the read side, the runs or deployments an
// absence trigger may be watching already, and opens a window for each
// that the log confirms.
func (c *Consumer) openWindows(ctx context.Context, a domain.Automation, env domain.Envelope) ([]op, error) {
	var query string
	switch t := a.Spec.Trigger; {
	case t.Type == domain.TriggerRunningLongerThan && t.Of == domain.StreamTaskRun:
		query = `SELECT id FROM task_runs WHERE state_type = 'RUNNING'`
	case t.Type == domain.TriggerRunningLongerThan:
		query = `SELECT id FROM flow_runs WHERE state_type = 'RUNNING'`
	case t.Type == domain.TriggerNotStartedWithin:
		query = `SELECT id FROM flow_runs WHERE state_type IN ('SCHEDULED', 'PENDING')`
	case t.Type == domain.TriggerNotCompletedWithin:
		query = `SELECT id FROM deployments`
	default:
		return nil, nil
	}
	rows, err := c.pool.Query(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("find open windows: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	envs, err := c.store.ReadStreams(ctx, c.pool, ids)
	if err != nil {
		return nil, err
	}
	if a.Spec.Trigger.Type == domain.TriggerNotCompletedWithin {
		return c.openDeploymentWindows(a, env, envs), nil
	}
	// per run: the event that opened its window, and its last event
	opened, last := map[uuid.UUID]domain.Envelope{}, map[uuid.UUID]domain.Envelope{}
	var order []uuid.UUID
	for _, e := range envs {
		state, ok := domain.StateReached(e.Event, e.RecordedAt)
		if !ok {
			continue
		}
		prev, seen := last[e.StreamID]
		if !seen {
			order = append(order, e.StreamID)
		}
		last[e.StreamID] = e
		switch a.Spec.Trigger.Type {
		case domain.TriggerRunningLongerThan:
			if state.Type != domain.Running {
				continue
			}
			if seen {
				if prevState, _ := domain.StateReached(prev.Event, prev.RecordedAt); prevState.Type == domain.Running {
					continue // still running since an earlier event
				}
			}
			opened[e.StreamID] = e
		case domain.TriggerNotStartedWithin:
			if _, created := e.Event.(domain.FlowRunCreated); created {
				opened[e.StreamID] = e
			} else if notWaiting(state) {
				opened[e.StreamID] = domain.Envelope{} // it started or ends: no window
			}
		}
	}
	var still []domain.Envelope
	for _, id := range order {
		state, _ := domain.StateReached(last[id].Event, last[id].RecordedAt)
		o := opened[id]
		if o.Event == nil || a.Spec.Trigger.Type == domain.TriggerRunningLongerThan && state.Type != domain.Running {
			continue
		}
		still = append(still, o)
	}
	if err := c.lookUpRuns(ctx, still); err != nil {
		return nil, err
	}
	var ops []op
	for _, o := range still {
		if !a.Spec.Filter.Matches(c.runOf(o).RunContext) {
			continue
		}
		since := o.RecordedAt
		if e, ok := o.Event.(domain.FlowRunCreated); ok {
			since = e.ScheduledAt
		}
		ops = append(ops, openWindow(openWindowSQL, a, o.StreamID, o.Position, o.Type, since, ""))
	}
	return ops, nil
}

// openDeploymentWindows opens a not_completed_within window on each live
// deployment the filter keeps, counting from the automation's event; its
// firing is tied to the deployment's first event, so that a gap already
// fired for (before a pause) is not fired again.
func (c *Consumer) openDeploymentWindows(a domain.Automation, env domain.Envelope, envs []domain.Envelope) []op {
	first, spec := map[uuid.UUID]domain.Envelope{}, map[uuid.UUID]domain.DeploymentSpec{}
	var order []uuid.UUID
	for _, e := range envs {
		switch ev := e.Event.(type) {
		case domain.DeploymentCreated:
			first[e.StreamID], spec[e.StreamID] = e, ev.Spec
			order = append(order, e.StreamID)
		case domain.DeploymentUpdated:
			spec[e.StreamID] = ev.Spec
		case domain.DeploymentDeleted:
			delete(spec, e.StreamID)
		}
	}
	var ops []op
	for _, id := range order {
		s, ok := spec[id]
		if !ok || !a.Spec.Filter.Matches(deploymentContext(s)) {
			continue
		}
		f := first[id]
		ops = append(ops, openWindow(openWindowSQL, a, id, f.Position, f.Type, env.RecordedAt, s.Name))
	}
	return ops
}
