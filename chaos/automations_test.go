package chaos

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/automations"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// hookReceiver is a webhook receiver on loopback. It checks each request's
// signature, keeps what it got by idempotency key, holds every request for
// hold (so that deliveries are in flight when a server is killed), and
// answers 503 to the first request of about a third of the firings (so that some
// firings are retried by design, not only after a kill).
type hookReceiver struct {
	t      *testing.T
	secret string
	hold   time.Duration
	srv    *httptest.Server

	mu       sync.Mutex
	got      map[string][]receipt // by Ordo-Idempotency-Key
	inFlight int
}

// receipt is one request a receiver got.
type receipt struct {
	path string
	id   string // the CloudEvent's id
	body string
}

func newHookReceiver(t *testing.T, secret string, hold time.Duration) *hookReceiver {
	r := &hookReceiver{t: t, secret: secret, hold: hold, got: map[string][]receipt{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	ts, sig, _ := strings.Cut(strings.TrimPrefix(req.Header.Get(automations.HeaderSignature), "t="), ",v1=")
	mac := hmac.New(sha256.New, []byte(r.secret))
	mac.Write([]byte(ts + "." + string(body)))
	if !hmac.Equal([]byte(sig), []byte(hex.EncodeToString(mac.Sum(nil)))) {
		r.t.Errorf("a webhook with a bad signature %q", req.Header.Get(automations.HeaderSignature))
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var ce automations.CloudEvent
	_ = json.Unmarshal(body, &ce)
	key := req.Header.Get(automations.HeaderIdempotencyKey)
	r.mu.Lock()
	r.got[key] = append(r.got[key], receipt{path: req.URL.Path, id: ce.ID, body: string(body)})
	first := len(r.got[key]) == 1
	r.inFlight++
	r.mu.Unlock()
	time.Sleep(r.hold)
	r.mu.Lock()
	r.inFlight--
	r.mu.Unlock()
	if first && key != "" && key[0]%3 == 0 {
		http.Error(w, "not now", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *hookReceiver) busy() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inFlight
}

func (r *hookReceiver) receipts() map[string][]receipt {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]receipt, len(r.got))
	for k, v := range r.got {
		out[k] = slices.Clone(v)
	}
	return out
}

// firingKey is what a firing is recorded once for.
type firingKey struct {
	automation uuid.UUID
	position   int64
}

// waitInFlight waits for a webhook request in flight at the receiver and
// returns how many there are. It looks every 2 ms (a request is held
// 300 ms), and gives up (0) only when the log has not grown for
// quietBound: on a loaded machine the servers take longer to fire and
// deliver, but keep appending while they do.
func waitInFlight(c *cluster, hook *hookReceiver) int {
	var head int64 = -1
	lastGrowth, lastLook := time.Now(), time.Time{}
	for {
		if n := hook.busy(); n > 0 {
			return n
		}
		if now := time.Now(); now.Sub(lastLook) > 250*time.Millisecond {
			lastLook = now
			var h int64
			if err := c.db.QueryRow(context.Background(), `SELECT coalesce(max(position), 0) FROM events`).Scan(&h); err == nil && h != head {
				head, lastGrowth = h, now
			}
			if now.Sub(lastGrowth) > quietBound {
				return 0
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestChaosAutomations runs two servers at once with three automations
// whose webhooks go to a receiver on loopback that checks signatures, and
// a workload of failing runs (and some that complete), and SIGKILLs the
// servers in turn, four times, each time while the receiver has requests
// in flight (both at once the last time), starting new ones after each
// kill. Afterwards: each event an automation matches fired it exactly once
// (one AutomationFired per automation and triggering position, none for
// events it does not match), every firing was delivered at least once with
// its own id as the idempotency key on every attempt and the same body,
// every delivery ended delivered, a kill cut at least one request short,
// and the read models equal a fresh replay.
func TestChaosAutomations(t *testing.T) {
	t.Parallel()
	const secret = "chaos-hook-secret"
	hook := newHookReceiver(t, secret, 300*time.Millisecond)
	c := newCluster(t, pgtest.URL(t))
	// A short backoff: the receiver's refusals are retried within the test.
	c.extraEnv = []string{"ORDO_WEBHOOK_ALLOW_PRIVATE=true", "CHAOS_HOOK_SECRET=" + secret, "ORDO_AUTOMATION_BACKOFF=200ms"}
	servers := []*server{c.startServer("server-a1", ""), c.startServer("server-b1", "")}
	const queue = "chaos-auto"
	c.startWorker("w1", 10, queue)

	fail := c.deploy(servers[0].url(), domain.DeploymentSpec{Name: "chaos-fail", WorkQueue: queue,
		Flow: domain.FlowSpec{Name: "failing", Tasks: []domain.TaskSpec{{Name: "boom", Command: []string{"sh", "-c", "echo boom >&2; exit 3"}}}}})
	ok := c.deploy(servers[1].url(), domain.DeploymentSpec{Name: "chaos-ok", WorkQueue: queue,
		Flow: domain.FlowSpec{Name: "fine", Tasks: []domain.TaskSpec{{Name: "fine", Command: []string{"true"}}}}})
	specs := []domain.AutomationSpec{
		{Name: "flow failures", Trigger: domain.AutomationTrigger{Type: domain.TriggerState, Of: domain.StreamFlowRun, States: []string{"FAILED"}},
			Filter: domain.AutomationFilter{Deployments: []string{"chaos-fail"}}},
		{Name: "task failures", Trigger: domain.AutomationTrigger{Type: domain.TriggerState, Of: domain.StreamTaskRun, States: []string{"FAILED", "CRASHED"}},
			Filter: domain.AutomationFilter{Deployments: []string{"chaos-*"}}},
		{Name: "completions of failing runs", Trigger: domain.AutomationTrigger{Type: domain.TriggerState, Of: domain.StreamFlowRun, States: []string{"COMPLETED"}},
			Filter: domain.AutomationFilter{Deployments: []string{"chaos-fail"}}},
	}
	autos := make([]uuid.UUID, len(specs))
	for i, s := range specs {
		s.Actions = []domain.AutomationAction{{Type: "webhook", URL: fmt.Sprintf("%s/a%d", hook.srv.URL, i), SecretEnv: "CHAOS_HOOK_SECRET"}}
		var a struct {
			ID uuid.UUID `json:"id"`
		}
		c.call(servers[i%2].url(), http.MethodPost, "/automations", s, &a)
		autos[i] = a.ID
	}
	t.Logf("servers a and b, worker w1; automations: %q on FlowRunFailed of chaos-fail, %q on task runs FAILED of chaos-*, %q on COMPLETED of chaos-fail (never); webhooks held %v by the receiver, the first request of about a third of the firings refused",
		specs[0].Name, specs[1].Name, specs[2].Name, hook.hold)

	var runs []uuid.UUID
	const kills = 4
	for i := range kills {
		base := servers[(i+1)%2].url()
		runs = append(runs, c.startRuns(base, fail, 15)...)
		runs = append(runs, c.startRuns(base, ok, 3)...)
		// The servers in turn; the last time both at once, so that a
		// request in flight is surely cut short.
		victims := []int{i % 2}
		if i == kills-1 {
			victims = []int{0, 1}
		}
		busy := waitInFlight(c, hook)
		var names []string
		var at time.Time
		for _, v := range victims {
			names = append(names, servers[v].name)
			at = servers[v].kill(t)
		}
		for _, v := range victims {
			servers[v] = c.startServer(fmt.Sprintf("server-%c%d", "ab"[v], i+2), "")
		}
		t.Logf("SIGKILL %s at %s with %d webhook requests in flight at the receiver; new servers started", strings.Join(names, " and "), at.Format("15:04:05.000"), busy)
	}
	c.waitEnded(runs, quietBound)
	l := c.readLog()
	want := expectedFirings(l, autos[0], autos[1])

	// A delivery whose server was killed mid-request stays running until
	// a server's rescuer, which looks every RescueEvery, finds it older
	// than the rescue bound; only then is it tried again. So the quiet
	// bound is that, on top of quietBound's allowance for a loaded machine.
	rescue := automations.DeliveryOptions{}.RescueAfter() + automations.RescueEvery
	c.progressing(fmt.Sprintf("all %d firings delivered", len(want)), rescue+quietBound, func() (int, bool) {
		var recorded, delivered int
		if err := c.db.QueryRow(context.Background(), `
SELECT (SELECT count(*) FROM automation_firings), (SELECT count(*) FROM automation_deliveries WHERE status = 'delivered')`).Scan(&recorded, &delivered); err != nil {
			t.Logf("count deliveries: %v", err)
			return -1, false
		}
		got := hook.receipts()
		n := 0
		for _, rs := range got {
			n += len(rs)
		}
		return recorded + delivered + n, recorded >= len(want) && delivered == recorded
	})

	l = c.readLog()
	got := hook.receipts()
	report(t, "firings not recorded exactly once or not delivered", firingProblems(want, l, got))
	query := func(sql string) []string {
		rows, err := c.db.Query(context.Background(), sql)
		if err != nil {
			t.Fatal(err)
		}
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	statuses := query(`SELECT status || ' ' || count(*) FROM automation_deliveries GROUP BY status ORDER BY status`)
	if len(statuses) != 1 || !strings.HasPrefix(statuses[0], "delivered ") {
		t.Errorf("deliveries by status: %v, want all delivered", statuses)
	}
	// A request the receiver got whose attempt was never recorded is one a
	// kill cut short.
	recordedAttempts := map[string]int{}
	for _, id := range query(`SELECT firing_id::text FROM automation_delivery_attempts`) {
		recordedAttempts[id]++
	}
	again, lostAnswers := 0, 0
	for key, rs := range got {
		if len(rs) > 1 {
			again++
		}
		lostAnswers += max(0, len(rs)-recordedAttempts[key])
	}
	t.Logf("%d firings of %d runs each recorded once and delivered: %d received more than once, with the same key and body each time; %d requests cut short by a kill (received, their attempt never recorded) (deliveries: %v)",
		len(want), len(runs), again, lostAnswers, statuses)
	if lostAnswers == 0 {
		t.Errorf("no kill cut a delivery short: the test did not test what it says")
	}
	c.verifyReplay()
}

// expectedFirings are the firings the log calls for, by the test's own
// reading of the automations: flowFailures fires on each FlowRunFailed of a
// run of chaos-fail, taskFailures on each TaskRunFailed of a task run of a
// chaos-* run. The third automation never matches.
func expectedFirings(l *runLog, flowFailures, taskFailures uuid.UUID) map[firingKey]bool {
	taskOf := map[uuid.UUID]uuid.UUID{}
	for run, fr := range l.flowRuns {
		for _, tr := range fr.TaskRunIDs {
			taskOf[tr] = run
		}
	}
	want := map[firingKey]bool{}
	for _, e := range l.events {
		switch e.Type {
		case "FlowRunFailed":
			if l.flowRuns[e.StreamID].DeploymentName == "chaos-fail" {
				want[firingKey{flowFailures, e.Position}] = true
			}
		case "TaskRunFailed":
			if strings.HasPrefix(l.flowRuns[taskOf[e.StreamID]].DeploymentName, "chaos-") {
				want[firingKey{taskFailures, e.Position}] = true
			}
		}
	}
	return want
}

// firingProblems checks the log's AutomationFired events against the
// firings wanted: each wanted one recorded exactly once, none other; and
// what the receiver got by idempotency key: every firing at least once,
// each request of it keyed with its id, carrying its id and one body.
func firingProblems(want map[firingKey]bool, l *runLog, got map[string][]receipt) []string {
	var problems []string
	recorded := map[firingKey]int{}
	ids := map[string]bool{}
	for _, e := range l.events {
		f, ok := e.Event.(domain.AutomationFired)
		if !ok || f.Test {
			continue
		}
		k := firingKey{f.AutomationID, f.TriggerPosition}
		recorded[k]++
		ids[e.StreamID.String()] = true
		if !want[k] {
			problems = append(problems, fmt.Sprintf("automation %s fired for position %d (%s), which it does not match", k.automation, k.position, f.TriggerType))
		}
		if id := domain.FiringID(k.automation, k.position); e.StreamID != id {
			problems = append(problems, fmt.Sprintf("firing of %s at %d on stream %s, not its id %s", k.automation, k.position, e.StreamID, id))
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(want), func(a, b firingKey) int {
		return cmp.Or(cmp.Compare(a.position, b.position), slices.Compare(a.automation[:], b.automation[:]))
	}) {
		if n := recorded[k]; n != 1 {
			problems = append(problems, fmt.Sprintf("automation %s for position %d recorded %d times", k.automation, k.position, n))
		}
		id := domain.FiringID(k.automation, k.position).String()
		rs := got[id]
		if len(rs) == 0 {
			problems = append(problems, fmt.Sprintf("firing %s (automation %s, position %d) never delivered", id, k.automation, k.position))
		}
		for i, r := range rs {
			if r.id != id || r.body != rs[0].body {
				problems = append(problems, fmt.Sprintf("request %d of firing %s carries id %s and %s body", i+1, id, r.id,
					map[bool]string{true: "the same", false: "another"}[r.body == rs[0].body]))
			}
		}
	}
	for _, key := range slices.Sorted(maps.Keys(got)) {
		if !ids[key] {
			problems = append(problems, fmt.Sprintf("the receiver got key %q, which is no firing recorded (%d requests)", key, len(got[key])))
		}
	}
	return problems
}

// TestAutomationChecksFindFaults shows that firingProblems fails on a
// firing recorded twice, one missing, one for an event its automation does
// not match, one never delivered, and a retry with another key or body.
func TestAutomationChecksFindFaults(t *testing.T) {
	t.Parallel()
	auto := uuid.New()
	fired := func(pos int64) domain.Envelope {
		return domain.Envelope{Position: pos + 100, StreamID: domain.FiringID(auto, pos), Type: "AutomationFired",
			Event: domain.AutomationFired{AutomationID: auto, TriggerPosition: pos, TriggerType: "FlowRunFailed"}}
	}
	delivered := func(pos int64, n int) []receipt {
		id := domain.FiringID(auto, pos).String()
		return slices.Repeat([]receipt{{id: id, body: `{"id":"` + id + `"}`}}, n)
	}
	want := map[firingKey]bool{{auto, 1}: true, {auto, 2}: true}
	key := func(pos int64) string { return domain.FiringID(auto, pos).String() }
	for _, tc := range []struct {
		name  string
		fired []domain.Envelope
		got   map[string][]receipt
		want  string
	}{
		{"Clean", []domain.Envelope{fired(1), fired(2)}, map[string][]receipt{key(1): delivered(1, 1), key(2): delivered(2, 3)}, ""},
		{"Doubled", []domain.Envelope{fired(1), fired(2), fired(2)}, map[string][]receipt{key(1): delivered(1, 1), key(2): delivered(2, 1)}, "position 2 recorded 2 times"},
		{"Missing", []domain.Envelope{fired(1)}, map[string][]receipt{key(1): delivered(1, 1)}, "position 2 recorded 0 times"},
		{"NotMatching", []domain.Envelope{fired(1), fired(2), fired(3)}, map[string][]receipt{key(1): delivered(1, 1), key(2): delivered(2, 1), key(3): delivered(3, 1)}, "fired for position 3"},
		{"NeverDelivered", []domain.Envelope{fired(1), fired(2)}, map[string][]receipt{key(1): delivered(1, 1)}, "never delivered"},
		{"RetryWithAnotherBody", []domain.Envelope{fired(1), fired(2)}, map[string][]receipt{key(1): delivered(1, 1), key(2): append(delivered(2, 1), receipt{id: key(2), body: "{}"})}, "request 2 of firing " + key(2) + " carries id " + key(2) + " and another body"},
		{"RetryWithAnotherKey", []domain.Envelope{fired(1), fired(2)}, map[string][]receipt{key(1): delivered(1, 1), key(2): delivered(2, 1), "other": delivered(2, 1)}, `got key "other"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(firingProblems(want, &runLog{events: tc.fired}, tc.got), "\n")
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Fatalf("problems %q, want %q", got, tc.want)
			}
		})
	}
}
