package api_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/ordoflow/ordo/api"
)

// Idempotency keys are each token's own: two tokens that send the same key
// get runs of their own, and each one's retry gets its own first answer.
func TestIdempotencyKeyPerToken(t *testing.T) {
	t.Parallel()
	b := fullSetup(t, true)
	ctx := context.Background()
	token := func(name string, scope api.Scope) string {
		t.Helper()
		secret, _, err := api.TokenCreate(ctx, b.pool, name, scope)
		if err != nil {
			t.Fatal(err)
		}
		return secret
	}
	admin, alice, bob := token("deployer", api.ScopeAdmin), token("alice", api.ScopeRun), token("bob", api.ScopeRun)
	body, _ := json.Marshal(deploymentBody("idem-tokens", func(d map[string]any) { delete(d, "schedule") }))
	r := b.send(t, "POST", "/api/v1/deployments", body, bearer(admin)...)
	if r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	var d struct{ ID string }
	r.decode(t, &d)
	runs := "/api/v1/deployments/" + d.ID + "/runs"

	// post starts a run as the token and returns its id and whether the
	// answer was a replay.
	post := func(secret, body string, header ...string) (string, bool) {
		t.Helper()
		r := b.send(t, "POST", runs, []byte(body), append(bearer(secret), header...)...)
		if r.status != 201 {
			t.Fatalf("start a run: %d %s", r.status, r.body)
		}
		var fr struct{ ID string }
		r.decode(t, &fr)
		return fr.ID, r.header.Get("Idempotent-Replayed") == "true"
	}
	for _, tc := range []struct {
		name   string
		body   string
		header []string
	}{
		{"Header", `{}`, []string{"Idempotency-Key", "nightly"}},
		{"Body", `{"idempotency_key": "nightly"}`, nil},
	} {
		a, _ := post(alice, tc.body, tc.header...)
		bb, replayed := post(bob, tc.body, tc.header...)
		if bb == a || replayed {
			t.Errorf("%s: bob's request with alice's key got her run %s (replayed %v)", tc.name, a, replayed)
		}
		if again, _ := post(alice, tc.body, tc.header...); again != a {
			t.Errorf("%s: alice's retry got run %s, want her first one %s", tc.name, again, a)
		}
		if again, _ := post(bob, tc.body, tc.header...); again != bb {
			t.Errorf("%s: bob's retry got run %s, want his first one %s", tc.name, again, bb)
		}
	}
	var n int
	if err := b.pool.QueryRow(ctx, `
SELECT count(*) FROM events WHERE type = 'FlowRunCreated' AND data->>'deployment_id' = $1`, d.ID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("%d runs, want 4: one per token and key kind", n)
	}
}
