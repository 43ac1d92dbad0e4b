package automations

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/notify"
)

// OrdoActions are what the actions cancel_run, pause_deployment and
// run_deployment do, provided by the server's wiring (this package must not
// import commands). A delivery may be attempted again after it acted (a
// crash before its attempt was recorded), so each must be idempotent:
// cancelling a run being cancelled or ended, or pausing a paused
// deployment, changes nothing, and RunStart with a key it saw returns the
// run it started then.
type OrdoActions interface {
	// RunCancel cancels the flow run; nil if it is being cancelled or has
	// ended.
	RunCancel(ctx context.Context, runID uuid.UUID, actor string) error
	// DeploymentPause pauses the named deployment; nil if it is paused.
	DeploymentPause(ctx context.Context, name, actor string) error
	// RunStart starts a run of the named deployment with parameters over
	// its own, once per idempotency key.
	RunStart(ctx context.Context, deployment string, parameters map[string]any, key, actor string) (uuid.UUID, error)
}

// checkActions refuses, when saving, a template that does not parse or
// names a field notify.Context lacks, naming the action's field.
func checkActions(spec domain.AutomationSpec) error {
	kinds := map[string]string{"text": notify.KindSlack, "subject": notify.KindSubject, "body": notify.KindBody}
	for i, a := range spec.Actions {
		for field, text := range a.Templates() {
			if _, err := notify.Parse(kinds[field], text); err != nil {
				return domain.Invalid("actions["+strconv.Itoa(i)+"]."+field, "bad template: %v", err)
			}
		}
	}
	return nil
}

// target is what a delivery row shows of an action's destination: never a
// Slack URL's path, which is its secret.
func target(a domain.AutomationAction) string {
	switch a.Type {
	case domain.ActionSlack:
		if u, err := url.Parse(a.URL); err == nil {
			return u.Scheme + "://" + u.Host + "/…"
		}
		return ""
	case domain.ActionEmail:
		return strings.Join(a.To, ", ")
	case domain.ActionPauseDeployment, domain.ActionRunDeployment:
		return a.Deployment
	}
	return a.URL
}

// actorOf is who Ordo actions act as: the automation, by name.
func actorOf(ce CloudEvent) string { return "automation:" + ce.Data.Automation.Name }

// messageContext builds what a message template sees: the firing's
// CloudEvent and the run as it was at the triggering event, so that every
// attempt renders the same text. A test firing gets notify.Sample's run.
func (w *deliveryWorker) messageContext(ctx context.Context, a DeliveryArgs, ce CloudEvent) (notify.Context, error) {
	d := ce.Data
	c := notify.Context{
		Automation:     notify.Automation{ID: d.Automation.ID.String(), Name: d.Automation.Name},
		Trigger:        notify.Trigger{Kind: a.Trigger, Description: describe(a.Trigger, d)},
		FiredAt:        ce.Time,
		IdempotencyKey: a.FiringID.String(),
	}
	if d.Test {
		s := notify.Sample()
		c.FlowRun, c.TaskRun = s.FlowRun, s.TaskRun
		c.RunURL = notify.RunURL(w.opts.PublicURL, s.FlowRun.ID)
		return c, nil
	}
	if d.FlowRun == nil {
		return c, nil
	}
	fr, err := w.runAt(ctx, d.FlowRun.ID, d.Trigger.Position)
	if err != nil {
		return c, err
	}
	c.FlowRun = notify.FlowRun{ID: d.FlowRun.ID.String(), Name: d.FlowRun.Name, DeploymentName: d.FlowRun.DeploymentName,
		WorkQueue: d.FlowRun.WorkQueue, Tags: d.FlowRun.Tags, State: stateOf(fr.State), Parameters: fr.Parameters,
		StartedAt: utc(fr.StartedAt), EndedAt: utc(fr.EndedAt)}
	if d.TaskRunID == nil && d.State != nil {
		c.FlowRun.State = stateOf(*d.State)
	}
	c.RunURL = notify.RunURL(w.opts.PublicURL, c.FlowRun.ID)
	if d.TaskRunID != nil {
		tr, err := foldAt(ctx, w, *d.TaskRunID, d.Trigger.Position, domain.TaskRun{ID: *d.TaskRunID})
		if err != nil {
			return c, err
		}
		c.TaskRun = notify.TaskRun{ID: tr.ID.String(), TaskName: tr.Task.Name, State: stateOf(tr.State), Attempt: tr.Attempt}
		if d.State != nil {
			c.TaskRun.State = stateOf(*d.State)
		}
		if tr.LastFailure != nil {
			c.TaskRun.Error = tr.LastFailure.Error
		}
	}
	return c, nil
}

// describe is the trigger's one line, e.g. "flow run reached FAILED".
func describe(trigger string, d EventData) string {
	if d.Test {
		return "test firing"
	}
	what := "flow run"
	if d.TaskRunID != nil {
		what = "task run"
	}
	if d.State == nil {
		return what + " matched " + trigger
	}
	s := string(d.State.Type)
	if d.State.Name != "" && !strings.EqualFold(d.State.Name, s) {
		s += " (" + d.State.Name + ")"
	}
	return what + " reached " + s
}

func stateOf(s domain.State) notify.State {
	return notify.State{Type: string(s.Type), Name: s.Name, Message: s.Message}
}

func utc(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// applier is a run's state, folded one event at a time.
type applier[T any] interface {
	Apply(domain.Event, time.Time) T
}

// foldAt folds a stream's events up to the log position at (all of them
// when at is 0) into zero.
func foldAt[T applier[T]](ctx context.Context, w *deliveryWorker, id uuid.UUID, at int64, zero T) (T, error) {
	envs, err := w.store.ReadStream(ctx, w.pool, id, 0)
	if err != nil {
		return zero, err
	}
	for _, env := range envs {
		if at == 0 || env.Position <= at {
			zero = zero.Apply(env.Event, env.RecordedAt)
		}
	}
	return zero, nil
}

func (w *deliveryWorker) runAt(ctx context.Context, id uuid.UUID, at int64) (domain.FlowRun, error) {
	return foldAt(ctx, w, id, at, domain.FlowRun{ID: id})
}

// act delivers a non-webhook action.
func (w *deliveryWorker) act(ctx context.Context, a DeliveryArgs) attemptResult {
	var ce CloudEvent
	if err := json.Unmarshal([]byte(a.Body), &ce); err != nil {
		return attemptResult{err: fmt.Errorf("read the firing: %w", err), permanent: true}
	}
	if a.Spec == nil {
		return attemptResult{err: errors.New("the delivery has no action"), permanent: true}
	}
	spec := *a.Spec
	start := time.Now()
	var res attemptResult
	switch spec.Type {
	case domain.ActionSlack, domain.ActionEmail:
		res = w.message(ctx, a, ce, spec)
	case domain.ActionCancelRun, domain.ActionPauseDeployment, domain.ActionRunDeployment:
		res.err = w.ordo(ctx, a, ce, spec)
		res.permanent = permanentOrdo(res.err)
	default:
		res.err, res.permanent = fmt.Errorf("unknown action type %q", spec.Type), true
	}
	if res.latency == 0 {
		res.latency = time.Since(start)
	}
	return res
}

// message renders and sends a Slack message or an email.
func (w *deliveryWorker) message(ctx context.Context, a DeliveryArgs, ce CloudEvent, spec domain.AutomationAction) attemptResult {
	mc, err := w.messageContext(ctx, a, ce)
	if err != nil {
		return attemptResult{err: fmt.Errorf("read the triggering run: %w", err)}
	}
	render := func(kind, text string) (string, error) {
		t, err := notify.Parse(kind, text)
		if err != nil {
			return "", err
		}
		return t.Execute(mc)
	}
	var res notify.Result
	if spec.Type == domain.ActionSlack {
		text, err := render(notify.KindSlack, spec.Text)
		if err != nil {
			return attemptResult{err: fmt.Errorf("text: %w", err), permanent: true}
		}
		payload, err := notify.SlackPayload(mc, text)
		if err != nil {
			return attemptResult{err: err, permanent: true}
		}
		res, err = notify.PostSlack(ctx, w.client, a.URL, payload)
		return resultOf(res, err)
	}
	subject, err := render(notify.KindSubject, spec.Subject)
	if err != nil {
		return attemptResult{err: fmt.Errorf("subject: %w", err), permanent: true}
	}
	body, err := render(notify.KindBody, spec.Body)
	if err != nil {
		return attemptResult{err: fmt.Errorf("body: %w", err), permanent: true}
	}
	cfg, err := w.smtp()
	if err != nil {
		return attemptResult{err: err}
	}
	// One key per action: two email actions of a firing are two messages.
	res, err = notify.SendEmail(ctx, cfg, spec.To, subject, body, a.FiringID.String()+"/"+strconv.Itoa(a.Action))
	return resultOf(res, err)
}

func (w *deliveryWorker) smtp() (notify.SMTPConfig, error) {
	if w.opts.SMTP != nil {
		return *w.opts.SMTP, nil
	}
	return notify.SMTPConfigFromEnv(w.opts.Getenv)
}

func resultOf(res notify.Result, err error) attemptResult {
	r := attemptResult{latency: res.Latency, err: err}
	if res.StatusCode != 0 {
		code := res.StatusCode
		r.code = &code
	}
	var ne *notify.Error
	r.permanent = errors.As(err, &ne) && ne.Permanent || errors.Is(err, errRefusedTarget)
	return r
}

// ordo runs an Ordo action. A test firing has no run to act on and is not
// let act on deployments either: it only checks the delivery path.
func (w *deliveryWorker) ordo(ctx context.Context, a DeliveryArgs, ce CloudEvent, spec domain.AutomationAction) error {
	if ce.Data.Test {
		return nil
	}
	if w.opts.Ordo == nil {
		return &domain.Error{Code: domain.CodeInvalid, Message: "this server cannot run Ordo actions"}
	}
	run := ce.Data.FlowRun
	actor := actorOf(ce)
	switch spec.Type {
	case domain.ActionCancelRun:
		if run == nil {
			return domain.Errorf(domain.CodeInvalid, "the firing has no flow run to cancel")
		}
		return w.opts.Ordo.RunCancel(ctx, run.ID, actor)
	case domain.ActionPauseDeployment:
		name := spec.Deployment
		if name == "" && run != nil {
			name = run.DeploymentName
		}
		if name == "" {
			return domain.Errorf(domain.CodeInvalid, "the triggering run has no deployment to pause")
		}
		return w.opts.Ordo.DeploymentPause(ctx, name, actor)
	}
	params := maps.Clone(spec.Parameters)
	if len(spec.FromRun) > 0 {
		if run == nil {
			return domain.Errorf(domain.CodeInvalid, "from_run: the firing has no flow run")
		}
		fr, err := w.runAt(ctx, run.ID, ce.Data.Trigger.Position)
		if err != nil {
			return fmt.Errorf("read the triggering run: %w", err)
		}
		if params == nil {
			params = map[string]any{}
		}
		for name, src := range spec.FromRun {
			if v, ok := fromRun(fr, src); ok {
				params[name] = v
			}
		}
	}
	_, err := w.opts.Ordo.RunStart(ctx, spec.Deployment, params, a.FiringID.String()+"/"+strconv.Itoa(a.Action), actor)
	return err
}

// fromRun is the value of a from_run source; false leaves the parameter to
// the deployment's default.
func fromRun(fr domain.FlowRun, src string) (any, bool) {
	switch src {
	case domain.FromRunID:
		return fr.ID.String(), true
	case domain.FromRunName:
		return fr.Name, fr.Name != ""
	case domain.FromRunDeployment:
		return fr.DeploymentName, fr.DeploymentName != ""
	}
	v, ok := fr.Parameters[src]
	return v, ok
}

// permanentOrdo: a refusal that a retry will not change.
func permanentOrdo(err error) bool {
	switch domain.ErrorCode(err) {
	case domain.CodeInvalid, domain.CodeNotFound, domain.CodeConflict:
		return err != nil
	}
	return false
}
