package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

const automationsDeployment = `
name: model_fails
work_queue: autos
tags: [prod]
flow:
  name: failing
  tasks:
    - name: train
      command: [sh, -c, 'echo diverged >&2; exit 3']
`

// A run that fails fires the automation created with the CLI: the webhook
// receiver in this test gets one signed request, the CLI shows the
// delivery, a test firing is delivered too, and the log stays valid.
func TestAutomationsEndToEnd(t *testing.T) {
	t.Parallel()
	const secret = "e2e-secret"
	hook, got := signedHook(t, secret)

	c := startClusterEnv(t, []string{"ORDO_WEBHOOK_ALLOW_PRIVATE=true", "ORDO_HOOK_SECRET=" + secret})
	c.start("worker", "-q", "autos")
	c.ordo("deploy", "-f", c.writeFile("deployment.yaml", automationsDeployment))
	out := c.ordo("automations", "create", "-f", c.writeFile("automation.yaml", `
name: failures to ops
trigger: {type: state, of: flow_run, states: [FAILED, CRASHED]}
filter: {deployments: ["model_*"], tags: [prod]}
actions:
  - {type: webhook, url: "`+hook.URL+`/ordo", secret_env: ORDO_HOOK_SECRET}
`))
	if !strings.Contains(out, "automation failures to ops (") || !strings.Contains(out, "created") {
		t.Fatalf("create: %s", out)
	}
	if out := c.ordo("automations", "ls"); !strings.Contains(out, "failures to ops") || !strings.Contains(out, "FAILED,CRASHED") {
		t.Fatalf("ls: %s", out)
	}
	run := runIDIn(t, c.ordo("run", "model_fails"))

	for deadline := time.Now().Add(3 * time.Minute); len(got()) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the webhook never came")
		}
	}
	if b := got()[0]; !strings.Contains(b, run) || !strings.Contains(b, `"specversion":"1.0"`) || !strings.Contains(b, `"type":"FAILED"`) {
		t.Fatalf("webhook body: %s", b)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		out = c.ordo("automations", "deliveries", "failures to ops")
		if strings.Contains(out, "delivered") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries: %s", out)
		}
	}
	if !strings.Contains(out, run) || !strings.Contains(out, "FlowRunFailed") {
		t.Fatalf("deliveries: %s", out)
	}

	if out := c.ordo("runs", "show", run); !strings.Contains(out, "fired:") || !strings.Contains(out, "failures to ops") || !strings.Contains(out, "delivered") {
		t.Fatalf("runs show: %s", out)
	}
	var event struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(got()[0]), &event); err != nil {
		t.Fatal(err)
	}
	if out, code := c.ordoCode("automations", "retry", "failures to ops", event.ID); code == 0 || !strings.Contains(out, "delivered") {
		t.Fatalf("retry of a delivered delivery: exit %d\n%s", code, out)
	}

	if out := c.ordo("automations", "test", "failures to ops"); !strings.Contains(out, "fired") {
		t.Fatalf("test: %s", out)
	}
	for deadline := time.Now().Add(time.Minute); len(got()) < 2; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the test firing never came")
		}
	}
	c.ordo("automations", "pause", "failures to ops")
	if out := c.ordo("automations", "show", "failures to ops"); !strings.Contains(out, `"paused": true`) {
		t.Fatalf("show: %s", out)
	}
	c.ordo("automations", "rm", "failures to ops")
	if out, code := c.ordoCode("automations", "show", "failures to ops"); code == 0 {
		t.Fatalf("show after rm: exit 0\n%s", out)
	}
	if n := len(got()); n != 2 {
		t.Fatalf("%d webhooks, want 2 (the failure and the test)", n)
	}
	c.validateLog()
	c.ordo("replay", "--verify")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		out := c.ordo("events")
		if strings.Contains(out, "AutomationFired") && strings.Contains(out, "AutomationDeleted") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ordo events shows no firing:\n%s", tail(out, 3000))
		}
	}
}
