package automations_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/ordoflow/ordo/automations"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
)

const secret = "s3cret-for-tests"

var quietLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// receiver is a webhook receiver on loopback that checks every request's
// signature and answers 500 to the first failFirst requests (all, when
// negative).
type receiver struct {
	t         *testing.T
	srv       *httptest.Server
	failFirst int

	mu   sync.Mutex
	keys []string
	body [][]byte
}

func newReceiver(t *testing.T, failFirst int) *receiver {
	r := &receiver{t: t, failFirst: failFirst}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	ts, sig, _ := strings.Cut(strings.TrimPrefix(req.Header.Get(automations.HeaderSignature), "t="), ",v1=")
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(body)))
	if _, err := strconv.ParseInt(ts, 10, 64); err != nil || !hmac.Equal([]byte(sig), []byte(hex.EncodeToString(mac.Sum(nil)))) {
		r.t.Errorf("bad signature %q", req.Header.Get(automations.HeaderSignature))
		http.Error(w, "bad signature", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.keys = append(r.keys, req.Header.Get(automations.HeaderIdempotencyKey))
	r.body = append(r.body, body)
	n := len(r.keys)
	r.mu.Unlock()
	if r.failFirst < 0 || n <= r.failFirst {
		http.Error(w, "not now", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) got() ([]string, [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.keys...), append([][]byte(nil), r.body...)
}

type bundle struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
	river *river.Client[pgx.Tx]
	svc   *automations.Service
}

func setup(t *testing.T, opts automations.DeliveryOptions) bundle {
	t.Helper()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, domain.NewRegistry())
	t.Cleanup(store.Close)
	if opts.Backoff == 0 {
		opts.Backoff = 10 * time.Millisecond
	}
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = 3
	}
	opts.Getenv = func(name string) string {
		if name == "HOOK_SECRET" {
			return secret
		}
		return ""
	}
	opts.Logger = quietLogger
	rc, err := automations.NewRiverClient(pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := rc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		stop, done := context.WithTimeout(context.Background(), 10*time.Second)
		defer done()
		_ = rc.Stop(stop)
	})
	return bundle{pool: pool, store: store, river: rc, svc: automations.NewService(store, rc, automations.ServiceOptions{AllowPrivate: true})}
}

// consumer runs a consumer until the returned stop is called (or the test ends).
func (b bundle) consumer(t *testing.T, noLeaderLock ...bool) (stop func()) {
	t.Helper()
	c := automations.NewConsumer(b.store, b.river, automations.ConsumerOptions{Logger: quietLogger, PollInterval: 20 * time.Millisecond, BatchSize: 7,
		LeaderRetry: 50 * time.Millisecond, NoLeaderLock: len(noLeaderLock) > 0 && noLeaderLock[0]})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(ctx)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func (b bundle) create(t *testing.T, url string, filter domain.AutomationFilter) domain.Automation {
	t.Helper()
	a, err := b.svc.AutomationCreate(context.Background(), domain.AutomationSpec{
		Name:    "failures " + uuid.NewString()[:8],
		Trigger: domain.AutomationTrigger{Type: domain.TriggerState, Of: domain.StreamFlowRun, States: []string{"FAILED", "CRASHED"}},
		Filter:  filter,
		Actions: []domain.AutomationAction{{Type: domain.ActionWebhook, URL: url, SecretEnv: "HOOK_SECRET"}},
	}, "test")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// endRun records a flow run of deployment that ends with the given event,
// straight into the log, as the write side would.
func (b bundle) endRun(t *testing.T, deployment string, end domain.Event) uuid.UUID {
	t.Helper()
	id := uuid.New()
	_, err := b.store.AppendAlone(context.Background(), eventstore.Append{StreamID: id, Events: []domain.Event{
		domain.FlowRunCreated{Name: "run-" + id.String()[:4], DeploymentName: deployment, WorkQueue: "default", Tags: []string{"prod"},
			Flow: domain.FlowSpec{Name: "ml"}, ScheduledAt: time.Now()},
		domain.FlowRunPending{}, domain.FlowRunStarted{}, end,
	}, Metadata: domain.Metadata{Actor: "test"}})
	if err != nil {
		t.Fatal(err)
	}
	b.store.Committed()
	return id
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute) // only so that a broken test ends
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// caughtUp waits until the consumer's checkpoint is at the log's head.
func (b bundle) caughtUp(t *testing.T) {
	t.Helper()
	eventually(t, "the consumer reaches the head of the log", func() bool {
		head, _, err := b.store.Head(context.Background(), b.pool)
		if err != nil {
			t.Fatal(err)
		}
		var txid string
		var pos int64
		err = b.pool.QueryRow(context.Background(), `SELECT transaction_id::text, position FROM automation_checkpoints`).Scan(&txid, &pos)
		if err == pgx.ErrNoRows {
			return false
		} else if err != nil {
			t.Fatal(err)
		}
		return strconv.FormatUint(head.TransactionID, 10) == txid && head.Position == pos
	})
}

func (b bundle) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (b bundle) deliveries(t *testing.T, id uuid.UUID) []domain.Delivery {
	t.Helper()
	ds, err := b.svc.AutomationDeliveries(context.Background(), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func (b bundle) settled(t *testing.T, id uuid.UUID, n int) []domain.Delivery {
	t.Helper()
	var ds []domain.Delivery
	eventually(t, "every delivery ends", func() bool {
		ds = b.deliveries(t, id)
		for _, d := range ds {
			if d.Status == "pending" {
				return false
			}
		}
		return len(ds) == n
	})
	return ds
}

func TestFailedRunFiresWebhookOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, automations.DeliveryOptions{AllowPrivate: true})
	rcv := newReceiver(t, 0)
	a := b.create(t, rcv.srv.URL, domain.AutomationFilter{Deployments: []string{"model_*"}, Tags: []string{"prod"}})
	b.consumer(t)
	run := b.endRun(t, "model_train", domain.FlowRunFailed{Message: "boom"})
	b.endRun(t, "other", domain.FlowRunFailed{Message: "not mine"})
	b.endRun(t, "model_train", domain.FlowRunCompleted{})
	ds := b.settled(t, a.ID, 1)
	b.caughtUp(t)

	if d := ds[0]; d.Status != "delivered" || d.Attempts != 1 || *d.FlowRunID != run {
		t.Fatalf("delivery = %+v", d)
	}
	keys, bodies := rcv.got()
	if len(keys) != 1 || keys[0] != domain.FiringID(a.ID, *ds[0].TriggerPosition).String() {
		t.Fatalf("receiver got keys %v", keys)
	}
	var ce automations.CloudEvent
	if err := json.Unmarshal(bodies[0], &ce); err != nil {
		t.Fatal(err)
	}
	if ce.SpecVersion != "1.0" || ce.ID != keys[0] || ce.Data.FlowRun == nil || ce.Data.FlowRun.ID != run ||
		ce.Data.FlowRun.DeploymentName != "model_train" || ce.Data.State == nil || ce.Data.State.Type != domain.Failed || ce.Data.State.Message != "boom" {
		t.Fatalf("body = %s", bodies[0])
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE type = 'AutomationFired'`); n != 1 {
		t.Fatalf("%d AutomationFired events, want 1", n)
	}
	verifyLog(t, b)
}

func TestRestartedConsumerDoesNotFireAgain(t *testing.T) {
	t.Parallel()
	b := setup(t, automations.DeliveryOptions{AllowPrivate: true})
	rcv := newReceiver(t, 0)
	a := b.create(t, rcv.srv.URL, domain.AutomationFilter{})
	stop := b.consumer(t)
	b.endRun(t, "d", domain.FlowRunCrashed{Message: "lost"})
	b.settled(t, a.ID, 1)
	b.caughtUp(t)
	stop()

	b.consumer(t)
	b.endRun(t, "d", domain.FlowRunCompleted{})
	b.caughtUp(t)
	b.settled(t, a.ID, 1)
	if keys, _ := rcv.got(); len(keys) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(keys))
	}
}

// Two consumers record each firing once: one waits for the other's leader
// lock; without the lock (NoLeaderLock), the checkpoint guard alone keeps
// them from recording anything twice.
func TestTwoConsumersRecordEachFiringOnce(t *testing.T) {
	t.Parallel()
	for name, noLock := range map[string]bool{"OneLeads": false, "BothRead": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			twoConsumers(t, noLock)
		})
	}
}

func twoConsumers(t *testing.T, noLock bool) {
	b := setup(t, automations.DeliveryOptions{AllowPrivate: true})
	rcv := newReceiver(t, 0)
	a := b.create(t, rcv.srv.URL, domain.AutomationFilter{})
	stop := b.consumer(t, noLock)
	b.consumer(t, noLock)
	const runs = 20
	for i := range runs {
		b.endRun(t, "d", domain.FlowRunFailed{Message: "x"})
		if i == runs/2 {
			stop() // the leader goes away: the other takes over
		}
	}
	b.settled(t, a.ID, runs)
	b.caughtUp(t)
	if n := b.count(t, `SELECT count(*) FROM events WHERE type = 'AutomationFired'`); n != runs {
		t.Fatalf("%d AutomationFired events, want %d", n, runs)
	}
	keys, _ := rcv.got()
	seen := map[string]bool{}
	for _, k := range keys {
		seen[k] = true
	}
	if len(seen) != runs {
		t.Fatalf("receiver got %d distinct keys, want %d", len(seen), runs)
	}
	verifyLog(t, b)
}

func TestRetriesKeepTheIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := setup(t, automations.DeliveryOptions{AllowPrivate: true, MaxAttempts: 5})
	rcv := newReceiver(t, 2)
	a := b.create(t, rcv.srv.URL, domain.AutomationFilter{})
	b.consumer(t)
	b.endRun(t, "d", domain.FlowRunFailed{Message: "x"})
	ds := b.settled(t, a.ID, 1)
	keys, _ := rcv.got()
	if len(keys) != 3 || keys[0] != keys[1] || keys[1] != keys[2] {
		t.Fatalf("keys = %v, want the same key three times", keys)
	}
	d := ds[0]
	if d.Status != "delivered" || d.Attempts != 3 || len(d.AttemptList) != 3 {
		t.Fatalf("delivery = %+v", d)
	}
	for i, want := range []int{500, 500, 204} {
		if got := d.AttemptList[i].StatusCode; got == nil || *got != want {
			t.Fatalf("attempt %d status %v, want %d", i+1, got, want)
		}
	}
}

func TestAlwaysFailingReceiverEndsDead(t *testing.T) {
	t.Parallel()
	b := setup(t, automations.DeliveryOptions{AllowPrivate: true, MaxAttempts: 3})
	rcv := newReceiver(t, -1)
	a := b.create(t, rcv.srv.URL, domain.AutomationFilter{})
	b.consumer(t)
	b.endRun(t, "d", domain.FlowRunFailed{Message: "x"})
	d := b.settled(t, a.ID, 1)[0]
	if d.Status != "dead" || d.Attempts != 3 || len(d.AttemptList) != 3 || d.LastStatusCode == nil || *d.LastStatusCode != 500 {
		t.Fatalf("delivery = %+v", d)
	}
	if keys, _ := rcv.got(); len(keys) != 3 {
		t.Fatalf("receiver got %d requests, want 3", len(keys))
	}
}

// A target refused at delivery: as a name that resolved to a public
// address when the automation was saved and resolves to a private one now.
// (The bundle's service accepts any target; the delivery does not.)
func TestPrivateTargetRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, automations.DeliveryOptions{})
	rcv := newReceiver(t, 0)
	a := b.create(t, rcv.srv.URL, domain.AutomationFilter{})
	b.consumer(t)
	b.endRun(t, "d", domain.FlowRunFailed{Message: "x"})
	d := b.settled(t, a.ID, 1)[0]
	if d.Status != "dead" || d.Attempts != 1 || d.LastError == nil || !strings.Contains(*d.LastError, "private") {
		t.Fatalf("delivery = %+v", d)
	}
	if keys, _ := rcv.got(); len(keys) != 0 {
		t.Fatalf("receiver got %d requests, want none", len(keys))
	}
}

func TestTestFiringIsDelivered(t *testing.T) {
	t.Parallel()
	b := setup(t, automations.DeliveryOptions{AllowPrivate: true})
	rcv := newReceiver(t, 0)
	a := b.create(t, rcv.srv.URL, domain.AutomationFilter{})
	id, err := b.svc.AutomationTest(context.Background(), a.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	d := b.settled(t, a.ID, 1)[0]
	if d.Status != "delivered" || d.FiringID != id || d.TriggerPosition != nil {
		t.Fatalf("delivery = %+v", d)
	}
	_, bodies := rcv.got()
	if !json.Valid(bodies[0]) || !strings.Contains(string(bodies[0]), `"test":true`) {
		t.Fatalf("body = %s", bodies[0])
	}
}

func TestPausedAutomationDoesNotFire(t *testing.T) {
	t.Parallel()
	b := setup(t, automations.DeliveryOptions{AllowPrivate: true})
	rcv := newReceiver(t, 0)
	a := b.create(t, rcv.srv.URL, domain.AutomationFilter{})
	b.consumer(t)
	if _, err := b.svc.AutomationPause(context.Background(), a.ID, "test"); err != nil {
		t.Fatal(err)
	}
	b.endRun(t, "d", domain.FlowRunFailed{Message: "while paused"})
	if _, err := b.svc.AutomationResume(context.Background(), a.ID, "test"); err != nil {
		t.Fatal(err)
	}
	run := b.endRun(t, "d", domain.FlowRunFailed{Message: "after"})
	ds := b.settled(t, a.ID, 1)
	b.caughtUp(t)
	if len(b.deliveries(t, a.ID)) != 1 || *ds[0].FlowRunID != run {
		t.Fatalf("deliveries = %+v", ds)
	}
	verifyLog(t, b)
}

// verifyLog replays the whole log through the domain's validator, as
// `ordo replay --verify` does.
func verifyLog(t *testing.T, b bundle) {
	t.Helper()
	envs, err := b.store.ReadAll(context.Background(), b.pool, eventstore.Checkpoint{}, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if err := domain.ValidateLog(domain.NewRegistry(), envs); err != nil {
		t.Fatal(err)
	}
}

func TestPrivateTargetRefusedWhenSaved(t *testing.T) {
	t.Parallel()
	b := setup(t, automations.DeliveryOptions{})
	svc := automations.NewService(b.store, b.river, automations.ServiceOptions{})
	for i, u := range []string{"http://127.0.0.1:8080/hook", "http://localhost/hook", "https://[::1]/", "http://10.1.2.3/", "http://169.254.169.254/latest", "http://[::ffff:192.168.1.1]/"} {
		_, err := svc.AutomationCreate(context.Background(), domain.AutomationSpec{
			Name:    "private " + strconv.Itoa(i),
			Trigger: domain.AutomationTrigger{Type: domain.TriggerState, Of: domain.StreamFlowRun, States: []string{"FAILED"}},
			Actions: []domain.AutomationAction{{Type: domain.ActionWebhook, URL: u, SecretEnv: "HOOK_SECRET"}},
		}, "test")
		if domain.ErrorCode(err) != domain.CodeInvalid || !strings.Contains(err.Error(), "actions[0].url") || !strings.Contains(err.Error(), "ORDO_WEBHOOK_ALLOW_PRIVATE") {
			t.Errorf("%s: err = %v", u, err)
		}
	}
	if _, err := svc.AutomationCreate(context.Background(), domain.AutomationSpec{
		Name:    "public",
		Trigger: domain.AutomationTrigger{Type: domain.TriggerState, Of: domain.StreamFlowRun, States: []string{"FAILED"}},
		Actions: []domain.AutomationAction{{Type: domain.ActionWebhook, URL: "https://hooks.example.com/ordo", SecretEnv: "HOOK_SECRET"}},
	}, "test"); err != nil {
		t.Fatal(err)
	}
}

// A consumer that starts for the first time after runs failed fires for
// those that failed once the automation existed, and for no earlier one.
func TestFirstConsumerStartsAtTheFirstAutomation(t *testing.T) {
	t.Parallel()
	b := setup(t, automations.DeliveryOptions{AllowPrivate: true})
	rcv := newReceiver(t, 0)
	b.endRun(t, "d", domain.FlowRunFailed{Message: "before any automation"})
	a := b.create(t, rcv.srv.URL, domain.AutomationFilter{})
	run := b.endRun(t, "d", domain.FlowRunFailed{Message: "after"})
	b.consumer(t)
	ds := b.settled(t, a.ID, 1)
	b.caughtUp(t)
	if ds = b.deliveries(t, a.ID); len(ds) != 1 || *ds[0].FlowRunID != run {
		t.Fatalf("deliveries = %+v", ds)
	}
}
