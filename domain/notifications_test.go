package domain_test

import (
	"strings"
	"testing"

	"github.com/ordoflow/ordo/domain"
)

func TestNotificationsBecomeAutomationsOfTheDeployment(t *testing.T) {
	t.Parallel()
	d, err := domain.ParseDeployment([]byte(`{"name": "nightly", "flow": {"name": "f", "tasks": [{"name": "t", "command": ["true"]}]},
		"notifications": [{"slack": "https://hooks.slack.example/T/B/x"},
		                  {"on": ["FAILED", "TimedOut"], "webhook": "https://hooks.example.com/o", "secret_env": "HOOK_SECRET"},
		                  {"on": ["COMPLETED"], "email": ["ops@example.com"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	specs := d.NotificationAutomations()
	if len(specs) != 3 {
		t.Fatalf("%d automations, want 3", len(specs))
	}
	for i, s := range specs {
		if err := s.Validate(); err != nil {
			t.Fatalf("automation %d: %v", i, err)
		}
		if !strings.HasPrefix(s.Name, "deployment:nightly/notifications[") || len(s.Filter.Deployments) != 1 || s.Filter.Deployments[0] != "nightly" {
			t.Fatalf("automation %d = %+v", i, s)
		}
	}
	if s := specs[0]; s.Name != "deployment:nightly/notifications[0]" || strings.Join(s.Trigger.States, ",") != "FAILED,CRASHED" || s.Actions[0].Type != "slack" {
		t.Fatalf("slack automation = %+v", s)
	}
	if a := specs[1].Actions[0]; a.Type != "webhook" || a.SecretEnv != "HOOK_SECRET" || strings.Join(specs[1].Trigger.States, ",") != "FAILED,TimedOut" {
		t.Fatalf("webhook automation = %+v", specs[1])
	}
	if a := specs[2].Actions[0]; a.Type != "email" || a.To[0] != "ops@example.com" {
		t.Fatalf("email automation = %+v", specs[2])
	}
}

func TestBadNotificationIsNamed(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]string{
		`{"on": ["FAILED"]}`: "notifications[0]: set one of slack, webhook or email",
		`{"slack": "https://a.example/x", "email": ["a@example.com"]}`: "notifications[0]: set only one",
		`{"slack": "/relative"}`:                               "notifications[0].slack: must be an absolute http or https URL",
		`{"webhook": "https://a.example/x"}`:                   "notifications[0].secret_env",
		`{"slack": "https://a.example/x", "secret_env": "S"}`:  "notifications[0].secret_env: is only for a webhook",
		`{"on": ["EXPLODED"], "slack": "https://a.example/x"}`: `notifications[0].on[0]: unknown state "EXPLODED"`,
		`{"email": ["nobody"]}`:                                `notifications[0].email[0]: "nobody" is not an email address`,
		`{"slack": "https://a.example/x", "text": "hi"}`:       "notifications[0].text",
	} {
		_, err := domain.ParseDeployment([]byte(`{"name": "n", "flow": {"name": "f", "tasks": [{"name": "t", "command": ["true"]}]}, "notifications": [` + body + `]}`))
		if err == nil || !strings.Contains(err.Error(), want) || domain.ErrorCode(err) != domain.CodeInvalid {
			t.Errorf("%s: err = %v, want %q", body, err, want)
		}
	}
}

func TestNotificationsInYAML(t *testing.T) {
	t.Parallel()
	d, err := domain.ParseDeploymentYAML([]byte(`
name: nightly
flow: {name: f, tasks: [{name: t, command: ["true"]}]}
notifications:
  - {on: [FAILED, CRASHED], slack: "https://hooks.slack.example/T/B/x"}
  - webhook: https://hooks.example.com/ordo
    secret_env: ORDO_HOOK_SECRET
`))
	if err != nil {
		t.Fatal(err)
	}
	if n := d.Notifications; len(n) != 2 || n[0].Slack == "" || n[1].SecretEnv != "ORDO_HOOK_SECRET" {
		t.Fatalf("notifications = %+v", n)
	}
}
