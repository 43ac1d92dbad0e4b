package automations_test

import (
	"context"
	"strings"
	"testing"

	"github.com/ordoflow/ordo/automations"
	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
)

func TestDeploymentNotificationsFollowTheDeployment(t *testing.T) {
	t.Parallel()
	b := setup(t, automations.DeliveryOptions{})
	ctx := context.Background()
	deployments := commands.NewDeploymentCommands(b.store)
	deployments.OnChange(automations.NewService(b.store, b.river, automations.ServiceOptions{}).DeploymentChanged)
	spec := func(n ...domain.DeploymentNotification) domain.DeploymentSpec {
		return domain.DeploymentSpec{Name: "nightly", WorkQueue: "default", Notifications: n,
			Flow: domain.FlowSpec{Name: "f", Tasks: []domain.TaskSpec{{Name: "t", Command: []string{"true"}}}}}
	}
	owned := func() map[string]domain.Automation {
		list, err := b.svc.AutomationList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]domain.Automation{}
		for _, a := range list {
			m[a.Spec.Name] = a
		}
		return m
	}
	slack := domain.DeploymentNotification{Slack: "https://hooks.slack.example/T/B/x"}
	hook := domain.DeploymentNotification{On: []string{"TimedOut"}, Webhook: "https://hooks.example.com/o", SecretEnv: "HOOK_SECRET"}

	d, _, err := deployments.DeploymentSave(ctx, spec(slack, hook), "test")
	if err != nil {
		t.Fatal(err)
	}
	got := owned()
	first, second := got["deployment:nightly/notifications[0]"], got["deployment:nightly/notifications[1]"]
	if len(got) != 2 || first.Spec.Actions[0].Type != "slack" || second.Spec.Actions[0].Type != "webhook" || second.Spec.Filter.Deployments[0] != "nightly" {
		t.Fatalf("automations = %+v", got)
	}

	// Without the webhook and with the Slack one changed: one changed, one gone.
	slack.On = []string{"FAILED"}
	if _, _, err := deployments.DeploymentSave(ctx, spec(slack), "test"); err != nil {
		t.Fatal(err)
	}
	got = owned()
	if a := got["deployment:nightly/notifications[0]"]; len(got) != 1 || a.ID != first.ID || strings.Join(a.Spec.Trigger.States, ",") != "FAILED" {
		t.Fatalf("automations = %+v", got)
	}

	// A refused notification refuses the deployment: nothing of it is saved.
	_, _, err = deployments.DeploymentSave(ctx, spec(domain.DeploymentNotification{Slack: "http://127.0.0.1:9/x"}), "test")
	if domain.ErrorCode(err) != domain.CodeInvalid || !strings.Contains(err.Error(), "notifications[0].slack") {
		t.Fatalf("private Slack URL: err = %v", err)
	}
	if cur, err := deployments.DeploymentGet(ctx, d.ID); err != nil || len(cur.Spec.Notifications) != 1 || cur.Spec.Notifications[0].Slack != slack.Slack {
		t.Fatalf("deployment after a refused save = %+v, %v", cur.Spec.Notifications, err)
	}

	if _, _, err := deployments.DeploymentSave(ctx, spec(), "test"); err != nil {
		t.Fatal(err)
	}
	if got := owned(); len(got) != 0 {
		t.Fatalf("automations after a deploy without notifications = %+v", got)
	}
	if _, _, err := deployments.DeploymentSave(ctx, spec(hook), "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := deployments.DeploymentDelete(ctx, d.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if got := owned(); len(got) != 0 {
		t.Fatalf("automations after the deployment was deleted = %+v", got)
	}
	verifyLog(t, b)
}
