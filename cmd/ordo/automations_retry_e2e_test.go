package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ordoflow/ordo/domain"
)

// downReceiver is a webhook receiver on loopback that checks signatures
// and is down (nothing listens on its address: connections are refused)
// until up is called.
type downReceiver struct {
	t      *testing.T
	secret string
	addr   string

	mu   sync.Mutex
	keys []string
}

func newDownReceiver(t *testing.T, secret string) *downReceiver {
	return &downReceiver{t: t, secret: secret, addr: freeAddr(t)}
}

func (r *downReceiver) url() string { return "http://" + r.addr + "/hook" }

// up starts listening on the receiver's address.
func (r *downReceiver) up() {
	r.t.Helper()
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatalf("the receiver cannot come back on %s: %v", r.addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		ts, sig, _ := strings.Cut(strings.TrimPrefix(req.Header.Get("Ordo-Signature"), "t="), ",v1=")
		mac := hmac.New(sha256.New, []byte(r.secret))
		mac.Write([]byte(ts + "." + string(body)))
		if !hmac.Equal([]byte(sig), []byte(hex.EncodeToString(mac.Sum(nil)))) {
			r.t.Errorf("bad signature %q", req.Header.Get("Ordo-Signature"))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		r.mu.Lock()
		r.keys = append(r.keys, req.Header.Get("Ordo-Idempotency-Key"))
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			r.t.Errorf("receiver: %v", err)
		}
	}()
	r.t.Cleanup(func() { _ = srv.Close() })
}

func (r *downReceiver) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.keys...)
}

var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// A failed run fires two automations whose receivers are down: one comes
// back after its delivery has failed four times and gets the firing once,
// the other never does and its delivery ends dead after the retry budget,
// in the API and the CLI. ORDO_AUTOMATION_BACKOFF=200ms makes the budget of
// 8 attempts 0.2+0.4+...+12.8 = 25.4 s from the first; the receiver comes
// back when the test sees the fourth failure, which leaves four attempts
// over 24 s (load only delays them).
func TestAutomationsReceiverDownThenBack(t *testing.T) {
	t.Parallel()
	const secret = "down-secret"
	back, gone := newDownReceiver(t, secret), newDownReceiver(t, secret)
	c := startClusterEnv(t, []string{"ORDO_WEBHOOK_ALLOW_PRIVATE=true", "ORDO_DOWN_SECRET=" + secret, "ORDO_AUTOMATION_BACKOFF=200ms"})
	c.start("worker", "-q", "autos")
	c.ordo("deploy", "-f", c.writeFile("deployment.yaml", automationsDeployment))
	create := func(name, url string) string {
		out := c.ordo("automations", "create", "-f", c.writeFile(name+".yaml", `
name: `+name+`
trigger: {type: state, of: flow_run, states: [FAILED]}
actions:
  - {type: webhook, url: "`+url+`", secret_env: ORDO_DOWN_SECRET}
`))
		id := uuidRE.FindString(out)
		if id == "" {
			t.Fatalf("create %s: %s", name, out)
		}
		return id
	}
	backID, goneID := create("comes-back", back.url()), create("never-back", gone.url())
	run := runIDIn(t, c.ordo("run", "model_fails"))

	deliveries := func(id string) []domain.Delivery {
		resp, err := http.Get(c.apiURL + "/api/v1/automations/" + id + "/deliveries")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var page struct {
			Items []domain.Delivery `json:"items"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("deliveries: %s %v", resp.Status, err)
		}
		return page.Items
	}
	// waitFor polls the one delivery of automation id until cond holds.
	// Its guard is against a hang only.
	waitFor := func(id, what string, cond func(domain.Delivery) bool) domain.Delivery {
		t.Helper()
		for deadline := time.Now().Add(6 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
			if ds := deliveries(id); len(ds) == 1 && cond(ds[0]) {
				return ds[0]
			} else if len(ds) > 1 {
				t.Fatalf("%d deliveries of one firing: %+v", len(ds), ds)
			}
			if time.Now().After(deadline) {
				t.Fatalf("never: %s", what)
			}
		}
	}
	first := waitFor(backID, "a first attempt at the receiver that is down", func(d domain.Delivery) bool { return d.Attempts >= 1 })
	downSince := first.AttemptList[0].At
	if first.Status != "pending" || first.AttemptList[0].Error == nil {
		t.Fatalf("the first attempt at a receiver that is down: %+v", first)
	}
	fourth := waitFor(backID, "four attempts at the receiver that is down", func(d domain.Delivery) bool { return d.Attempts >= 4 })
	if fourth.Status != "pending" {
		t.Fatalf("the receiver is still down and its delivery has attempts left: %+v", fourth)
	}
	back.up()
	t.Logf("receiver up again %v after the first failed attempt, which was refused: %s", time.Since(downSince).Round(time.Millisecond), *first.AttemptList[0].Error)

	d := waitFor(backID, "delivered once the receiver is back", func(d domain.Delivery) bool { return d.Status != "pending" })
	if d.Status != "delivered" || d.Attempts < 5 || d.FlowRunID == nil || d.FlowRunID.String() != run {
		t.Fatalf("after the receiver came back: %+v", d)
	}
	keys := back.got()
	if len(keys) != 1 || keys[0] != d.FiringID.String() {
		t.Fatalf("the receiver got %q, want the firing %s once", keys, d.FiringID)
	}
	t.Logf("delivered at attempt %d, %v after the first", d.Attempts, d.AttemptList[len(d.AttemptList)-1].At.Sub(downSince).Round(time.Millisecond))

	dead := waitFor(goneID, "the delivery to the receiver that never comes back ends", func(d domain.Delivery) bool { return d.Status != "pending" })
	if dead.Status != "dead" || dead.Attempts != 8 || len(dead.AttemptList) != 8 || dead.LastError == nil {
		t.Fatalf("the delivery to a receiver that never came back: %+v", dead)
	}
	for i, a := range dead.AttemptList {
		if a.Error == nil || a.StatusCode != nil {
			t.Fatalf("attempt %d to a receiver that is down: %+v", i+1, a)
		}
	}
	if out := c.ordo("automations", "deliveries", "never-back"); !strings.Contains(out, dead.FiringID.String()) || !strings.Contains(out, "dead") {
		t.Fatalf("ordo automations deliveries never-back:\n%s", out)
	}
	if out := c.ordo("automations", "deliveries", "comes-back"); !strings.Contains(out, "delivered") {
		t.Fatalf("ordo automations deliveries comes-back:\n%s", out)
	}
	c.validateLog()
}
