package automations_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/automations"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/projections"
)

func (b bundle) createTrigger(t *testing.T, url string, trigger domain.AutomationTrigger, filter domain.AutomationFilter) domain.Automation {
	t.Helper()
	a, err := b.svc.AutomationCreate(context.Background(), domain.AutomationSpec{
		Name: trigger.Type + " " + uuid.NewString()[:8], Trigger: trigger, Filter: filter,
		Actions: []domain.AutomationAction{{Type: domain.ActionWebhook, URL: url, SecretEnv: "HOOK_SECRET"}},
	}, "test")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// withTrigger sets up a test of one automation with trigger and filter,
// whose webhook goes to the returned receiver, and starts a consumer.
func withTrigger(t *testing.T, trigger domain.AutomationTrigger, filter domain.AutomationFilter) (bundle, *receiver, domain.Automation) {
	t.Helper()
	b := setup(t, automations.DeliveryOptions{AllowPrivate: true})
	rcv := newReceiver(t, 0)
	a := b.createTrigger(t, rcv.srv.URL, trigger, filter)
	b.consumer(t)
	return b, rcv, a
}

// stream is a run or deployment the test writes to the log as the write
// side would.
type stream struct {
	id      uuid.UUID
	version int64
}

func (b bundle) write(t *testing.T, s *stream, events ...domain.Event) []domain.Envelope {
	t.Helper()
	envs, err := b.store.AppendAlone(context.Background(), eventstore.Append{StreamID: s.id, ExpectedVersion: s.version, Events: events, Metadata: domain.Metadata{Actor: "test"}})
	if err != nil {
		t.Fatal(err)
	}
	s.version += int64(len(events))
	b.store.Committed()
	return envs
}

// newRun creates a flow run of a deployment, due at scheduledAt, and
// appends then to it.
func (b bundle) newRun(t *testing.T, deployment string, deploymentID uuid.UUID, scheduledAt time.Time, then ...domain.Event) *stream {
	t.Helper()
	s := &stream{id: uuid.New()}
	b.write(t, s, append([]domain.Event{domain.FlowRunCreated{Name: "run-" + s.id.String()[:4], DeploymentID: deploymentID, DeploymentName: deployment,
		WorkQueue: "default", Tags: []string{"prod"}, Flow: domain.FlowSpec{Name: "ml"}, ScheduledAt: scheduledAt}}, then...)...)
	return s
}

func (b bundle) deployment(t *testing.T, name string) *stream {
	t.Helper()
	s := &stream{id: uuid.New()}
	b.write(t, s, domain.DeploymentCreated{Spec: domain.DeploymentSpec{Name: name, WorkQueue: "default", Flow: domain.FlowSpec{Name: "ml"}}})
	return s
}

// firings checks, once the consumer has read the whole log, that it holds
// want firings and is valid.
func (b bundle) firings(t *testing.T, want int) {
	t.Helper()
	b.caughtUp(t)
	if n := b.count(t, `SELECT count(*) FROM events WHERE type = 'AutomationFired'`); n != want {
		t.Fatalf("%d firings, want %d", n, want)
	}
	verifyLog(t, b)
}

// project runs the read side's projector: what an automation created late
// looks at for windows already open.
func (b bundle) project(t *testing.T) {
	t.Helper()
	proj, err := projections.NewProjector(b.store, projections.ProjectorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = proj.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func ended(state domain.StateType) domain.Event {
	switch state {
	case domain.Completed:
		return domain.FlowRunCompleted{}
	case domain.Crashed:
		return domain.FlowRunCrashed{Message: "lost"}
	}
	return domain.FlowRunFailed{Message: "boom"}
}

// fired decodes the CloudEvents the receiver got.
func (r *receiver) fired(t *testing.T) []automations.CloudEvent {
	t.Helper()
	_, bodies := r.got()
	ces := make([]automations.CloudEvent, len(bodies))
	for i, body := range bodies {
		if err := json.Unmarshal(body, &ces[i]); err != nil {
			t.Fatal(err)
		}
	}
	return ces
}

// checkWindow checks that a delivery is of a window of kind that fired no
// earlier than its deadline, seconds after it opened.
func (b bundle) checkWindow(t *testing.T, d domain.Delivery, kind string, seconds int) {
	t.Helper()
	if d.TriggerKind != kind || d.Window == nil || d.Window.Seconds != seconds || !d.Window.Deadline.Equal(d.Window.Since.Add(time.Duration(seconds)*time.Second)) {
		t.Fatalf("delivery's trigger = %s %+v, want a %s window of %d s", d.TriggerKind, d.Window, kind, seconds)
	}
	var recorded time.Time
	if err := b.pool.QueryRow(context.Background(), `SELECT recorded_at FROM events WHERE stream_id = $1`, d.FiringID).Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if recorded.Before(d.Window.Deadline) {
		t.Fatalf("fired at %s, before its deadline %s", recorded, d.Window.Deadline)
	}
}

// A run RUNNING longer than the trigger's seconds fires once, while it is
// still running; a run that ends before its deadline never fires.
func TestRunningLongerThanFiresWhileRunning(t *testing.T) {
	t.Parallel()
	b, rcv, a := withTrigger(t, domain.AutomationTrigger{Type: domain.TriggerRunningLongerThan, Of: domain.StreamFlowRun, Seconds: 1}, domain.AutomationFilter{Deployments: []string{"d"}})
	short := b.newRun(t, "d", uuid.New(), time.Now(), domain.FlowRunPending{}, domain.FlowRunStarted{})
	b.write(t, short, domain.FlowRunCompleted{})
	long := b.newRun(t, "d", uuid.New(), time.Now(), domain.FlowRunPending{})
	started := b.write(t, long, domain.FlowRunStarted{})[0]
	b.newRun(t, "other", uuid.New(), time.Now(), domain.FlowRunPending{}, domain.FlowRunStarted{})

	d := b.settled(t, a.ID, 1)[0]
	if *d.FlowRunID != long.id || *d.TriggerPosition != started.Position || d.TriggerType != "FlowRunStarted" {
		t.Fatalf("delivery = %+v, want the long run's start at %d", d, started.Position)
	}
	b.checkWindow(t, d, domain.TriggerRunningLongerThan, 1)
	if !d.Window.Since.Equal(started.RecordedAt) {
		t.Fatalf("window since %s, want the start %s", d.Window.Since, started.RecordedAt)
	}
	ce := rcv.fired(t)[0]
	if ce.Data.Trigger.Kind != domain.TriggerRunningLongerThan || ce.Data.State == nil || ce.Data.State.Type != domain.Running ||
		ce.Data.Trigger.Window == nil || ce.Data.FlowRun == nil || ce.Data.FlowRun.ID != long.id {
		t.Fatalf("CloudEvent data = %+v", ce.Data)
	}
	// the short run's window closed when it ended; the long run's fired
	b.caughtUp(t)
	if n := b.count(t, `SELECT count(*) FROM automation_timers`); n != 0 {
		t.Fatalf("%d windows left open", n)
	}
	b.write(t, long, domain.FlowRunCompleted{})
	b.firings(t, 1)
}

// A window opened before a restart, or watched by two consumers at once,
// fires once.
func TestWindowFiresOnceAcrossRestartsAndConsumers(t *testing.T) {
	t.Parallel()
	for name, twoReaders := range map[string]bool{"Restarted": false, "TwoConsumers": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, automations.DeliveryOptions{AllowPrivate: true})
			rcv := newReceiver(t, 0)
			a := b.createTrigger(t, rcv.srv.URL, domain.AutomationTrigger{Type: domain.TriggerRunningLongerThan, Of: domain.StreamFlowRun, Seconds: 2}, domain.AutomationFilter{})
			stop := b.consumer(t, twoReaders)
			if twoReaders {
				b.consumer(t, true)
			}
			run := b.newRun(t, "d", uuid.New(), time.Now(), domain.FlowRunPending{}, domain.FlowRunStarted{})
			eventually(t, "the window opens", func() bool { return b.count(t, `SELECT count(*) FROM automation_timers`) == 1 })
			if !twoReaders {
				stop()
				if n := b.count(t, `SELECT count(*) FROM automation_firings`); n != 0 {
					t.Fatalf("fired before its deadline: %d", n)
				}
				b.consumer(t)
			}
			d := b.settled(t, a.ID, 1)[0]
			if *d.FlowRunID != run.id {
				t.Fatalf("delivery = %+v", d)
			}
			b.checkWindow(t, d, domain.TriggerRunningLongerThan, 2)
			b.firings(t, 1)
			if keys, _ := rcv.got(); len(keys) != 1 {
				t.Fatalf("receiver got %d requests, want 1", len(keys))
			}
		})
	}
}

// A task run's window fires with the task run and its flow run.
func TestRunningLongerThanOfTaskRun(t *testing.T) {
	t.Parallel()
	b, rcv, a := withTrigger(t, domain.AutomationTrigger{Type: domain.TriggerRunningLongerThan, Of: domain.StreamTaskRun, Seconds: 1}, domain.AutomationFilter{Deployments: []string{"d"}})
	run := b.newRun(t, "d", uuid.New(), time.Now(), domain.FlowRunPending{}, domain.FlowRunStarted{})
	task := &stream{id: uuid.New()}
	b.write(t, task, domain.TaskRunCreated{FlowRunID: run.id, Task: domain.TaskSpec{Name: "train"}}, domain.TaskRunStarted{Attempt: 1})

	d := b.settled(t, a.ID, 1)[0]
	if d.TaskRunID == nil || *d.TaskRunID != task.id || *d.FlowRunID != run.id {
		t.Fatalf("delivery = %+v, want task run %s of %s", d, task.id, run.id)
	}
	b.checkWindow(t, d, domain.TriggerRunningLongerThan, 1)
	if ce := rcv.fired(t)[0]; ce.Data.TaskRunID == nil || *ce.Data.TaskRunID != task.id || ce.Data.State.Type != domain.Running {
		t.Fatalf("CloudEvent data = %+v", ce.Data)
	}
}

// A run not started seconds after it was due fires once; one that starts
// in time never does.
func TestNotStartedWithinFiresForARunStillWaiting(t *testing.T) {
	t.Parallel()
	b, rcv, a := withTrigger(t, domain.AutomationTrigger{Type: domain.TriggerNotStartedWithin, Seconds: 1}, domain.AutomationFilter{})
	due := time.Now().UTC().Truncate(time.Millisecond)
	waiting := b.newRun(t, "d", uuid.New(), due, domain.FlowRunPending{})
	b.newRun(t, "d", uuid.New(), time.Now(), domain.FlowRunPending{}, domain.FlowRunStarted{})

	d := b.settled(t, a.ID, 1)[0]
	if *d.FlowRunID != waiting.id || d.TriggerType != "FlowRunCreated" || !d.Window.Since.Equal(due) {
		t.Fatalf("delivery = %+v (window %+v), want the waiting run's, since %s", d, d.Window, due)
	}
	b.checkWindow(t, d, domain.TriggerNotStartedWithin, 1)
	if ce := rcv.fired(t)[0]; ce.Data.State == nil || ce.Data.State.Type != domain.Pending {
		t.Fatalf("CloudEvent data = %+v", ce.Data)
	}
	b.caughtUp(t)
	if n := b.count(t, `SELECT count(*) FROM automation_timers`); n != 0 {
		t.Fatalf("%d windows left open: the started run's should have closed", n)
	}
}

// A deployment with no completed run for seconds fires once per gap,
// counting from the automation's creation or the last completion.
func TestNotCompletedWithinFiresOncePerGap(t *testing.T) {
	t.Parallel()
	b := setup(t, automations.DeliveryOptions{AllowPrivate: true})
	rcv := newReceiver(t, 0)
	b.project(t)
	stale, fresh := b.deployment(t, "fresh_a"), b.deployment(t, "fresh_b")
	b.deployment(t, "other")
	eventually(t, "the read side shows the deployments", func() bool { return b.count(t, `SELECT count(*) FROM deployments`) == 3 })
	b.consumer(t)
	a := b.createTrigger(t, rcv.srv.URL, domain.AutomationTrigger{Type: domain.TriggerNotCompletedWithin, Seconds: 1},
		domain.AutomationFilter{Deployments: []string{"fresh_*"}})
	completed := b.newRun(t, "fresh_b", fresh.id, time.Now(), domain.FlowRunPending{}, domain.FlowRunStarted{}, domain.FlowRunCompleted{})
	late := b.deployment(t, "fresh_c") // created after the automation

	ds := b.settled(t, a.ID, 3)
	byDeployment := map[uuid.UUID]domain.Delivery{}
	for _, d := range ds {
		b.checkWindow(t, d, domain.TriggerNotCompletedWithin, 1)
		byDeployment[d.Window.DeploymentID] = d
	}
	if len(byDeployment) != 3 || byDeployment[stale.id].Window.DeploymentName != "fresh_a" {
		t.Fatalf("deliveries by deployment = %+v", byDeployment)
	}
	if d := byDeployment[fresh.id]; d.TriggerType != "FlowRunCompleted" || !d.Window.Since.After(a.CreatedAt) {
		t.Fatalf("fresh_b's window = %+v (%s), want one from its completion %s", d.Window, d.TriggerType, completed.id)
	}
	if d := byDeployment[late.id]; d.TriggerType != "DeploymentCreated" {
		t.Fatalf("fresh_c's window opened by %s", d.TriggerType)
	}
	b.caughtUp(t)
	if n := b.count(t, `SELECT count(*) FROM automation_timers`); n != 0 {
		t.Fatalf("%d windows open after each gap fired; none should be until a completion", n)
	}
	b.newRun(t, "fresh_a", stale.id, time.Now(), domain.FlowRunPending{}, domain.FlowRunStarted{}, domain.FlowRunCompleted{})
	b.settled(t, a.ID, 4)
	if ce := rcv.fired(t)[0]; ce.Data.Trigger.Kind != domain.TriggerNotCompletedWithin || ce.Data.Trigger.Window == nil || ce.Data.Trigger.Window.DeploymentName == "" {
		t.Fatalf("CloudEvent data = %+v", ce.Data)
	}
	verifyLog(t, b)
}

// N failed runs of a deployment in a row fire once, at the Nth; a
// completed run starts the count again; the count survives a restart.
func TestConsecutiveFailuresFireAtTheNth(t *testing.T) {
	t.Parallel()
	b := setup(t, automations.DeliveryOptions{AllowPrivate: true})
	rcv := newReceiver(t, 0)
	a := b.createTrigger(t, rcv.srv.URL, domain.AutomationTrigger{Type: domain.TriggerConsecutiveFailures, Count: 2}, domain.AutomationFilter{})
	dep, other := uuid.New(), uuid.New()
	stop := b.consumer(t)
	end := func(deployment uuid.UUID, state domain.StateType) uuid.UUID {
		return b.newRun(t, "d", deployment, time.Now(), domain.FlowRunPending{}, domain.FlowRunStarted{}, ended(state)).id
	}
	end(dep, domain.Failed)
	end(other, domain.Failed) // another deployment's streak
	b.caughtUp(t)
	stop()
	b.consumer(t)
	second := end(dep, domain.Crashed)
	end(dep, domain.Failed)
	end(dep, domain.Completed)
	fifth := &stream{id: end(dep, domain.Failed), version: 4}
	b.write(t, fifth, domain.FlowRunRetried{TaskNames: []string{"train"}}, domain.FlowRunFailed{Message: "again"}) // still one run
	sixth := end(dep, domain.Failed)
	b.caughtUp(t)

	ds := b.settled(t, a.ID, 2)
	got := map[uuid.UUID]bool{}
	for _, d := range ds {
		if d.TriggerKind != domain.TriggerConsecutiveFailures || d.Window == nil || d.Window.Count != 2 || d.Window.DeploymentID != dep {
			t.Fatalf("delivery = %+v (window %+v)", d, d.Window)
		}
		got[*d.FlowRunID] = true
	}
	if !got[second] || !got[sixth] {
		t.Fatalf("fired for %v, want the 2nd and the 6th runs", got)
	}
	if n := b.count(t, `SELECT failures FROM automation_streaks WHERE deployment_id = $1`, dep); n != 2 {
		t.Fatalf("streak = %d, want 2", n)
	}
}

// A paused automation's window does not fire; one created, or resumed,
// after a run started still catches it.
func TestPausedAndLateAutomations(t *testing.T) {
	t.Parallel()
	b := setup(t, automations.DeliveryOptions{AllowPrivate: true})
	b.project(t)
	rcv := newReceiver(t, 0)
	trigger := domain.AutomationTrigger{Type: domain.TriggerRunningLongerThan, Of: domain.StreamFlowRun, Seconds: 1}
	paused := b.createTrigger(t, rcv.srv.URL, trigger, domain.AutomationFilter{})
	b.consumer(t)
	run := b.newRun(t, "d", uuid.New(), time.Now(), domain.FlowRunPending{}, domain.FlowRunStarted{})
	eventually(t, "the read side shows the run running", func() bool {
		return b.count(t, `SELECT count(*) FROM flow_runs WHERE id = $1 AND state_type = 'RUNNING'`, run.id) == 1
	})
	if _, err := b.svc.AutomationPause(context.Background(), paused.ID, "test"); err != nil {
		t.Fatal(err)
	}
	trigger.Seconds = 2
	late := b.createTrigger(t, rcv.srv.URL, trigger, domain.AutomationFilter{})

	d := b.settled(t, late.ID, 1)[0]
	if *d.FlowRunID != run.id || d.TriggerType != "FlowRunStarted" {
		t.Fatalf("delivery = %+v", d)
	}
	b.checkWindow(t, d, domain.TriggerRunningLongerThan, 2)
	if d.Window.Since.After(late.CreatedAt) {
		t.Fatalf("window since %s, want the run's start, before the automation (%s)", d.Window.Since, late.CreatedAt)
	}
	// windows fire in deadline order: the paused one's came first
	if ds := b.deliveries(t, paused.ID); len(ds) != 0 {
		t.Fatalf("the paused automation fired: %+v", ds)
	}
	// resumed, it catches the run still running, once
	if _, err := b.svc.AutomationResume(context.Background(), paused.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if d := b.settled(t, paused.ID, 1)[0]; *d.FlowRunID != run.id {
		t.Fatalf("resumed automation's delivery = %+v", d)
	}
	b.firings(t, 2)
}

// A deployment changed so that the filter no longer keeps it has its
// not_completed_within window closed.
func TestNotCompletedWithinFollowsDeploymentChanges(t *testing.T) {
	t.Parallel()
	b, _, a := withTrigger(t, domain.AutomationTrigger{Type: domain.TriggerNotCompletedWithin, Seconds: 3600}, domain.AutomationFilter{Tags: []string{"prod"}})
	spec := domain.DeploymentSpec{Name: "nightly", Tags: []string{"prod"}, Flow: domain.FlowSpec{Name: "ml"}}
	dep := &stream{id: uuid.New()}
	b.write(t, dep, domain.DeploymentCreated{Spec: spec})
	b.caughtUp(t)
	if n := b.count(t, `SELECT count(*) FROM automation_timers WHERE automation_id = $1 AND subject = $2 AND deployment_name = 'nightly'`, a.ID, dep.id); n != 1 {
		t.Fatalf("%d windows for the new deployment, want 1", n)
	}
	spec.Tags = nil
	b.write(t, dep, domain.DeploymentUpdated{Spec: spec, Version: 2, Changed: []string{"tags"}})
	b.caughtUp(t)
	if n := b.count(t, `SELECT count(*) FROM automation_timers`); n != 0 {
		t.Fatalf("%d windows after the deployment left the filter, want 0", n)
	}
}
