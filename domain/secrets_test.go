package domain_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ordoflow/ordo/domain"
)

func secretSpec(env map[string]string, inherit ...string) domain.DeploymentSpec {
	return domain.DeploymentSpec{Name: "d", Flow: domain.FlowSpec{Name: "f", Tasks: []domain.TaskSpec{
		{Name: "a", Command: []string{"x"}, Env: env, InheritEnv: inherit},
	}}}
}

// TestSecretEnvRefused: env values that would store a secret in clear are
// refused, naming the field and pointing to inherit_env.
func TestSecretEnvRefused(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, value string }{
		{"DB_PASSWORD", "hunter2"},
		{"PGPASSWORD", "hunter2"},
		{"MYSQL_PASSWD", "hunter2"},
		{"AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"},
		{"client_secret", "c1ient-s3cret"},
		{"GITHUB_TOKEN", "ghp_abcdef123"},
		{"api_key", "sk-live-9f8e7d"},
		{"SSH_PRIVATE_KEY_PATH", "/keys/id_ed25519"}, // KEY anywhere: when in doubt, inherit it
		{"DATABASE_URL", "postgres://ml:hunter2@db:5432/houses"},
		{"UPSTREAM", "see https://user:pa%20ss@example.com/x?y=1 for details"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			spec := secretSpec(map[string]string{c.name: c.value})
			err := spec.Validate()
			var e *domain.Error
			if !errors.As(err, &e) || e.Code != domain.CodeInvalid {
				t.Fatalf("%s=%s: %v, want invalid", c.name, c.value, err)
			}
			if len(e.Details) != 1 || e.Details[0].Field != "flow.tasks[0].env."+c.name || !strings.Contains(e.Details[0].Message, "inherit_env") {
				t.Fatalf("details %+v: want one on flow.tasks[0].env.%s pointing to inherit_env", e.Details, c.name)
			}
			if strings.Contains(e.Error(), c.value) {
				t.Fatalf("the error repeats the secret value: %v", e)
			}
		})
	}
}

// TestSecretEnvAllowed: plain variables, URLs without a password and
// secrets passed by name through inherit_env are fine.
func TestSecretEnvAllowed(t *testing.T) {
	t.Parallel()
	spec := secretSpec(map[string]string{
		"PYTHONPATH":   ".",
		"DATABASE_URL": "postgres://ml@db:5432/houses?sslmode=disable",
		"DOCS":         "https://example.com/a://b",
		"EMPTY_PASS":   "postgres://ml:@db/houses",
		"LOG_LEVEL":    "debug",
	}, "DB_PASSWORD", "PGPASSWORD", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY")
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"DB_PASSWORD": true, "db_password": true, "Api_Key": true, "HOME": false, "PATH": false, "TOKENIZER_MODEL": true} {
		if got := domain.SecretEnvName(name); got != want {
			t.Errorf("SecretEnvName(%q) = %t", name, got)
		}
	}
}
