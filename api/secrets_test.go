package api_test

import (
	"context"
	"strings"
	"testing"
)

// TestSecretEnvNeverStored: a deployment that gives a secret as an env
// value is refused with a message pointing to inherit_env, and the value
// is nowhere in the database afterwards (not in events, not in the stored
// idempotent response); inherit_env names are accepted and no value of
// theirs exists to store.
func TestSecretEnvNeverStored(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const secret = "hunter2-7f3a9c"
	for i, body := range []any{
		deploymentBody("leaky", func(d map[string]any) {
			d["flow"].(map[string]any)["tasks"].([]any)[0].(map[string]any)["env"] = map[string]string{"DB_PASSWORD": secret}
		}),
		deploymentBody("leaky-url", func(d map[string]any) {
			d["flow"].(map[string]any)["tasks"].([]any)[0].(map[string]any)["env"] = map[string]string{"DATABASE_URL": "postgres://ml:" + secret + "@db/houses"}
		}),
		"name: leaky-yaml\nflow:\n  name: f\n  tasks:\n    - name: a\n      command: [x]\n      env: {API_TOKEN: " + secret + "}\n",
	} {
		ct := "application/json"
		if _, isYAML := body.(string); isYAML {
			ct = "application/yaml"
		}
		r := b.do(t, "POST", "/api/v1/deployments", body, "Content-Type", ct, "Idempotency-Key", "secret-"+strconv(int64(i)))
		var env errorEnvelope
		r.decode(t, &env)
		if r.status != 400 || env.Error.Code != "invalid" || len(env.Error.Details) != 1 ||
			!strings.HasPrefix(env.Error.Details[0].Field, "flow.tasks[0].env.") || !strings.Contains(env.Error.Details[0].Message, "inherit_env") {
			t.Fatalf("secret env: %d %s", r.status, r.body)
		}
		if strings.Contains(string(r.body), secret) {
			t.Fatalf("the response repeats the secret: %s", r.body)
		}
	}
	var found int
	err := b.pool.QueryRow(context.Background(), `
SELECT (SELECT count(*) FROM events WHERE data::text LIKE '%' || $1 || '%' OR metadata::text LIKE '%' || $1 || '%')
     + (SELECT count(*) FROM idempotency_keys WHERE position(convert_to($1, 'UTF8') in coalesce(body, '')) > 0)
     + (SELECT count(*) FROM deployments WHERE spec::text LIKE '%' || $1 || '%')`, secret).Scan(&found)
	if err != nil || found != 0 {
		t.Fatalf("the secret is stored in %d rows (%v)", found, err)
	}

	ok := deploymentBody("inherits", func(d map[string]any) {
		d["flow"].(map[string]any)["tasks"].([]any)[0].(map[string]any)["inherit_env"] = []string{"DB_PASSWORD", "PGPASSWORD"}
	})
	if r := b.do(t, "POST", "/api/v1/deployments", ok); r.status != 201 {
		t.Fatalf("inherit_env: %d %s", r.status, r.body)
	}
}
