package domain_test

import (
	"strings"
	"testing"

	"github.com/ordoflow/ordo/domain"
)

func TestAutomationActionsValidateNamesTheField(t *testing.T) {
	t.Parallel()
	valid := []domain.AutomationAction{
		{Type: "slack", URL: "https://hooks.slack.example/T0/B0/x", Text: "{{.FlowRun.Name}} failed"},
		{Type: "email", To: []string{"ops@example.com", "Ann <ann@example.com>"}, Subject: "{{.Automation.Name}}"},
		{Type: "cancel_run"},
		{Type: "pause_deployment"},
		{Type: "pause_deployment", Deployment: "nightly"},
		{Type: "run_deployment", Deployment: "cleanup", Parameters: map[string]any{"force": true},
			FromRun: map[string]string{"table": "table", "failed_run": "$run_id"}},
	}
	for i, a := range valid {
		s := validAutomation()
		s.Actions = []domain.AutomationAction{a}
		if err := s.Validate(); err != nil {
			t.Fatalf("valid action %d: %v", i, err)
		}
	}
	cases := map[string]struct {
		action domain.AutomationAction
		want   string
	}{
		"SlackWithoutURL":      {domain.AutomationAction{Type: "slack"}, "actions[0].url: is required"},
		"SlackWithSecretEnv":   {domain.AutomationAction{Type: "slack", URL: "https://x.example/h", SecretEnv: "S"}, "actions[0].secret_env: is not a field of slack actions"},
		"EmailWithoutTo":       {domain.AutomationAction{Type: "email"}, "actions[0].to: name at least one recipient"},
		"EmailBadAddress":      {domain.AutomationAction{Type: "email", To: []string{"ops@example.com", "nobody"}}, `actions[0].to[1]: "nobody" is not an email address`},
		"CancelWithDeployment": {domain.AutomationAction{Type: "cancel_run", Deployment: "x"}, "actions[0].deployment: is not a field of cancel_run actions"},
		"RunWithoutDeployment": {domain.AutomationAction{Type: "run_deployment"}, "actions[0].deployment: is required"},
		"FromRunUnknownSource": {domain.AutomationAction{Type: "run_deployment", Deployment: "d", FromRun: map[string]string{"x": "$nope"}}, `actions[0].from_run.x: unknown source "$nope"`},
		"FromRunAndParameters": {domain.AutomationAction{Type: "run_deployment", Deployment: "d", Parameters: map[string]any{"x": 1}, FromRun: map[string]string{"x": "x"}}, "actions[0].from_run.x: is also in parameters"},
		"PauseWithParameters":  {domain.AutomationAction{Type: "pause_deployment", Parameters: map[string]any{"x": 1}}, "actions[0].parameters: is not a field"},
		"WebhookWithTemplate":  {domain.AutomationAction{Type: "webhook", URL: "https://x.example/h", SecretEnv: "S", Text: "hi"}, "actions[0].text: is not a field of webhook actions"},
		"EmailWithURL":         {domain.AutomationAction{Type: "email", To: []string{"a@example.com"}, URL: "https://x.example"}, "actions[0].url: is not a field of email actions"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := validAutomation()
			s.Actions = []domain.AutomationAction{c.action}
			err := s.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) || domain.ErrorCode(err) != domain.CodeInvalid {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}
