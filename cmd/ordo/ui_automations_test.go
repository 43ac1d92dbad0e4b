package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/ordoflow/ordo/automations"
	"github.com/ordoflow/ordo/internal/hooktest"
)

// TestUIAutomations drives the Automations page: a failed run's delivery
// ends dead at a receiver that answers 500, the page shows it, Retry
// delivers it once the receiver is back (with the same idempotency key),
// and the run page shows what fired for the run.
func TestUIAutomations(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("browser tests are not short")
	}
	hook := hooktest.New(t, true)
	e := startUIWith(t, serverOptions{allowPrivateWebhooks: true, delivery: automations.DeliveryOptions{
		MaxAttempts: 2, Backoff: 50 * time.Millisecond, Getenv: func(string) string { return "ui-secret" }}}, "uiauto")

	d := e.deploy(t, map[string]any{"name": "ui-auto", "work_queue": "uiauto",
		"flow": map[string]any{"name": "autoflow", "tasks": []any{shellTask("t", "exit 3")}}})
	var a struct {
		ID string `json:"id"`
	}
	e.mustAPI(t, http.MethodPost, "/automations", map[string]any{
		"name":    "ui failures",
		"trigger": map[string]any{"type": "state", "of": "flow_run", "states": []string{"FAILED"}},
		"filter":  map[string]any{"deployments": []string{"ui-auto"}},
		"actions": []any{map[string]any{"type": "webhook", "url": hook.URL + "/hook", "secret_env": "UI_HOOK_SECRET"}},
	}, &a)
	run := e.waitRun(t, e.startRun(t, d.ID, nil).ID, "the end", terminal)
	if run.State.Type != "FAILED" {
		t.Fatalf("run ended %s, want FAILED", run.State.Type)
	}

	ctx := e.tab(t)
	e.open(t, ctx, "/automations")
	section := `document.querySelector('section[data-automation="ui failures"]')`
	row := section + `.querySelector('table.deliveries tbody tr')`
	e.waitJS(t, ctx, "the dead delivery", sel(`!!%s && %s.dataset.status === 'dead' && %s.innerText.includes('500') && %s.innerText.includes('webhook')
		&& document.querySelector('nav a[href="/automations"]').getAttribute('aria-current') === 'page'`, row, row, row, section), time.Minute)
	e.screenshot(t, ctx, "automations-dead")

	hook.Down.Store(false)
	e.run(t, ctx, "press Retry", click(`section[data-automation="ui failures"] button.retry-delivery`))
	e.waitJS(t, ctx, "the delivery delivered", sel(`%s.dataset.status === 'delivered' && %s.children[4].innerText.trim() === '200'
		&& !%s.querySelector('button.retry-delivery') && document.querySelector('#automations-message').className.includes('ok')`, row, row, section), time.Minute)
	e.screenshot(t, ctx, "automations-retried")
	got := hook.Keys()
	if len(got) != 3 || got[0] != got[1] || got[1] != got[2] || got[0] == "" {
		t.Fatalf("idempotency keys %v: want one key on 3 requests", got)
	}

	e.open(t, ctx, "/runs/"+run.ID)
	firing := `document.querySelector('#run-firings tr[data-automation="ui failures"]')`
	e.waitJS(t, ctx, "the firing on the run page", sel(`!!%s && %s.dataset.status === 'delivered' && %s.innerText.includes('200') && %s.innerText.includes('FlowRunFailed')`,
		firing, firing, firing, firing), time.Minute)
	e.screenshot(t, ctx, "run-firings")
}
