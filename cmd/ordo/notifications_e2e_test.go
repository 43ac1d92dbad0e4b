package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// notifications: in a deployment file makes a Slack message arrive when its
// run fails, linking to the run under ORDO_PUBLIC_URL; a re-deploy without
// it removes the automation.
func TestDeploymentNotificationsEndToEnd(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var msgs []string
	slack := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		msgs = append(msgs, string(body))
		mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(slack.Close)
	got := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), msgs...)
	}
	c := startClusterEnv(t, []string{"ORDO_WEBHOOK_ALLOW_PRIVATE=true", "ORDO_PUBLIC_URL=https://ordo.example"})
	c.start("worker", "-q", "autos")
	c.ordo("deploy", "-f", c.writeFile("deployment.yaml", automationsDeployment+`notifications:
  - {on: [FAILED], slack: "`+slack.URL+`/services/T/B/x"}
`))
	if out := c.ordo("automations", "ls"); !strings.Contains(out, "deployment:model_fails/notifications[0]") {
		t.Fatalf("ls: %s", out)
	}
	run := runIDIn(t, c.ordo("run", "model_fails"))
	for deadline := time.Now().Add(3 * time.Minute); len(got()) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the Slack message never came")
		}
	}
	// The JSON escapes < and >, as encoding/json does.
	if m := strings.NewReplacer(`\u003c`, "<", `\u003e`, ">").Replace(got()[0]); !strings.Contains(m, "<https://ordo.example/runs/"+run+"|") || !strings.Contains(m, "model_fails") || !strings.Contains(m, "FAILED") {
		t.Fatalf("slack message: %s", m)
	}
	c.ordo("deploy", "-f", c.writeFile("deployment2.yaml", automationsDeployment))
	if out := c.ordo("automations", "ls"); strings.Contains(out, "notifications[0]") {
		t.Fatalf("ls after a deploy without notifications: %s", out)
	}
	c.validateLog()
}
