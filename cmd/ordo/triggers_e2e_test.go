package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ordoflow/ordo/client"
)

const slowDeployment = `
name: slow_job
work_queue: slow
flow:
  name: slow
  tasks:
    - name: crunch
      command: [sleep, "300"]
`

// signedHook is a webhook receiver that checks each request's signature
// and key; got returns the bodies it accepted.
func signedHook(t *testing.T, secret string) (hook *httptest.Server, got func() []string) {
	var mu sync.Mutex
	var bodies []string
	hook = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts, sig, _ := strings.Cut(strings.TrimPrefix(r.Header.Get("Ordo-Signature"), "t="), ",v1=")
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(ts + "." + string(body)))
		if !hmac.Equal([]byte(sig), []byte(hex.EncodeToString(mac.Sum(nil)))) || r.Header.Get("Ordo-Idempotency-Key") == "" {
			t.Errorf("unsigned or unkeyed request: %v", r.Header)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		bodies = append(bodies, string(body))
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	return hook, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), bodies...)
	}
}

// A task RUNNING longer than the trigger's seconds fires while it is still
// running: the webhook comes, and the task is checked RUNNING after it,
// then cancelled; nothing more fires.
func TestRunningLongerThanEndToEnd(t *testing.T) {
	t.Parallel()
	const secret = "e2e-secret"
	hook, got := signedHook(t, secret)
	c := startClusterEnv(t, []string{"ORDO_WEBHOOK_ALLOW_PRIVATE=true", "ORDO_HOOK_SECRET=" + secret})
	c.start("worker", "-q", "slow")
	c.ordo("deploy", "-f", c.writeFile("deployment.yaml", slowDeployment))
	c.ordo("automations", "create", "-f", c.writeFile("automation.yaml", `
name: stuck tasks
trigger: {type: running_longer_than, of: task_run, seconds: 2}
filter: {deployments: [slow_job]}
actions:
  - {type: webhook, url: "`+hook.URL+`/ordo", secret_env: ORDO_HOOK_SECRET}
`))
	if out := c.ordo("automations", "ls"); !strings.Contains(out, "running_longer_than task_run 2s") {
		t.Fatalf("ls: %s", out)
	}
	run := runIDIn(t, c.ordo("run", "slow_job"))

	for deadline := time.Now().Add(3 * time.Minute); len(got()) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the webhook never came")
		}
	}
	var fr client.FlowRun
	getJSON(t, c, "/runs/"+run, &fr)
	task := taskRunNamed(t, fr, "crunch")
	if task.State.Type != "RUNNING" || task.EndedAt != nil {
		t.Fatalf("after the webhook the task is %s (ended %v): it fired late", task.State.Type, task.EndedAt)
	}
	var ce struct {
		Data struct {
			Trigger struct {
				Kind   string `json:"kind"`
				Window struct {
					Since    time.Time `json:"since"`
					Deadline time.Time `json:"deadline"`
					Seconds  int       `json:"seconds"`
				} `json:"window"`
			} `json:"trigger"`
			TaskRunID string `json:"task_run_id"`
			FlowRun   struct {
				ID string `json:"id"`
			} `json:"flow_run"`
			State struct {
				Type string `json:"type"`
			} `json:"state"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(got()[0]), &ce); err != nil {
		t.Fatal(err)
	}
	d := ce.Data
	if d.Trigger.Kind != "running_longer_than" || d.TaskRunID != task.ID || d.FlowRun.ID != run || d.State.Type != "RUNNING" ||
		d.Trigger.Window.Seconds != 2 || !d.Trigger.Window.Deadline.Equal(d.Trigger.Window.Since.Add(2*time.Second)) {
		t.Fatalf("webhook body: %s", got()[0])
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		out := c.ordo("automations", "deliveries", "stuck tasks")
		if strings.Contains(out, "delivered") {
			if !strings.Contains(out, "running_longer_than TaskRunStarted") || !strings.Contains(out, run) {
				t.Fatalf("deliveries: %s", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries: %s", out)
		}
	}

	c.ordo("runs", "cancel", run)
	for deadline := time.Now().Add(2 * time.Minute); fr.State.Type != "CANCELLED"; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("run is %s, never cancelled", fr.State.Type)
		}
		getJSON(t, c, "/runs/"+run, &fr)
	}
	if n := len(got()); n != 1 {
		t.Fatalf("%d webhooks, want 1", n)
	}
	c.validateLog()
	c.ordo("replay", "--verify")
}
