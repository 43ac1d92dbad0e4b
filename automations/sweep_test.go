package automations_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ordoflow/ordo/automations"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// A delivery whose last attempt was cut off (its server killed mid-attempt)
// is left by River's rescuer discarded, without its worker knowing: the
// sweeper ends it dead with the cut-off attempt recorded, a retry then
// delivers it with the same idempotency key, and the metrics count it.
func TestSweeperEndsRescuedDeliveryDead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, domain.NewRegistry())
	t.Cleanup(store.Close)
	rcv := newReceiver(t, 0)
	opts := automations.DeliveryOptions{AllowPrivate: true, MaxAttempts: 3, Backoff: 10 * time.Millisecond, Logger: quietLogger,
		Getenv: func(string) string { return secret }}
	rc, err := automations.NewRiverClient(pool, opts) // not started yet: the job waits as a killed server left it
	if err != nil {
		t.Fatal(err)
	}
	svc := automations.NewService(store, rc, automations.ServiceOptions{AllowPrivate: true, RetryAttempts: 3})
	spec, err := domain.ParseAutomation([]byte(`{"name": "rescued", "trigger": {"type": "state", "of": "flow_run", "states": ["FAILED"]},
		"actions": [{"type": "webhook", "url": "` + rcv.srv.URL + `", "secret_env": "HOOK_SECRET"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	a, err := svc.AutomationCreate(ctx, spec, "test")
	if err != nil {
		t.Fatal(err)
	}
	firing, err := svc.AutomationTest(ctx, a.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	// as River's rescuer leaves a job stuck in its last attempt, with two
	// earlier attempts recorded by the worker
	if _, err := pool.Exec(ctx, `
UPDATE river_job SET state = 'discarded', attempt = 3, max_attempts = 3, attempted_at = now() - interval '2 minutes', finalized_at = now(),
    errors = ARRAY[jsonb_build_object('at', now(), 'attempt', 3, 'error', 'Stuck job rescued by JobRescuer', 'trace', '')]
WHERE kind = $1 AND args->>'firing_id' = $2`, automations.KindDelivery, firing.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
INSERT INTO automation_delivery_attempts (firing_id, action, attempt, status_code, latency_ms, error)
VALUES ($1, 0, 1, 500, 3, 'the receiver answered 500'), ($1, 0, 2, 500, 3, 'the receiver answered 500')`, firing); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE automation_deliveries SET attempts = 2, last_status_code = 500 WHERE firing_id = $1`, firing); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	if err := svc.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	// gauge is the value of a gauge, with its one label's value (or none)
	gauge := func(name, label string) int {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				if len(m.GetLabel()) == 0 && label == "" || len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label {
					return int(m.GetGauge().GetValue())
				}
			}
		}
		t.Fatalf("no %s{%q}", name, label)
		return 0
	}
	countOf := func(status string) int { return gauge("ordo_automation_deliveries", status) }
	if countOf("pending") != 1 || countOf("dead") != 0 {
		t.Fatalf("before the sweep: %d pending, %d dead", countOf("pending"), countOf("dead"))
	}
	if lag := gauge("ordo_automation_consumer_lag_events", ""); lag != 0 {
		t.Fatalf("consumer lag %d before the consumer ever ran, want 0", lag)
	}
	var events int
	if _, err := pool.Exec(ctx, `INSERT INTO automation_checkpoints (name) VALUES ('automations')`); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if lag := gauge("ordo_automation_consumer_lag_events", ""); lag != events || events == 0 {
		t.Fatalf("consumer lag %d from the log's start, want the %d events", lag, events)
	}

	sweeper := automations.NewSweeper(pool, automations.SweeperOptions{Logger: quietLogger})
	if n, err := sweeper.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	if n, err := sweeper.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("second sweep: %d, %v", n, err)
	}
	list, err := svc.AutomationDeliveries(ctx, a.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	d := list[0]
	if d.Status != "dead" || d.Attempts != 3 || d.LastStatusCode != nil || d.LastError == nil || !strings.Contains(*d.LastError, "Stuck job rescued") ||
		len(d.AttemptList) != 3 || d.AttemptList[2].Error == nil || !strings.Contains(*d.AttemptList[2].Error, "cut off") {
		t.Fatalf("after the sweep: %+v", d)
	}
	if countOf("pending") != 0 || countOf("dead") != 1 {
		t.Fatalf("after the sweep: %d pending, %d dead", countOf("pending"), countOf("dead"))
	}

	// a server takes deliveries again; the dead one is retried (and may be
	// delivered by the time the retry answers)
	runCtx, cancel := context.WithCancel(ctx)
	if err := rc.Start(runCtx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		stop, done := context.WithTimeout(context.Background(), 10*time.Second)
		defer done()
		_ = rc.Stop(stop)
	})
	if _, err := svc.DeliveryRetry(ctx, a.ID, uuid.New(), 0); domain.ErrorCode(err) != domain.CodeNotFound {
		t.Fatalf("retry of no delivery: %v", err)
	}
	if d, err = svc.DeliveryRetry(ctx, a.ID, firing, 0); err != nil || d.Status == "dead" {
		t.Fatalf("retry: %+v, %v", d, err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		list, err := svc.AutomationDeliveries(ctx, a.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		if d = list[0]; d.Status == "delivered" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the retried delivery: %+v", d)
		}
	}
	if keys, _ := rcv.got(); len(keys) != 1 || keys[0] != firing.String() || d.Attempts != 4 || len(d.AttemptList) != 4 {
		t.Fatalf("delivered with keys %v, %d attempts (%d listed); want the firing %s on attempt 4", keys, d.Attempts, len(d.AttemptList), firing)
	}
	if _, err := svc.DeliveryRetry(ctx, a.ID, firing, 0); domain.ErrorCode(err) != domain.CodeConflict || !strings.Contains(err.Error(), "delivered") {
		t.Fatalf("retry of a delivered one: %v", err)
	}
	if n, err := sweeper.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep after delivery: %d, %v", n, err)
	}
}
