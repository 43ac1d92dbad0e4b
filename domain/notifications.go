package domain

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// DeploymentNotification is the deployment file's shortcut for the common
// automation: when a run of this deployment reaches one of On, tell Slack,
// a webhook or people by email. Saving the deployment creates, changes or
// deletes the automation each one stands for (NotificationAutomations).
type DeploymentNotification struct {
	On        []string `json:"on,omitempty"`         // state types or named states; defaults to FAILED, CRASHED
	Slack     string   `json:"slack,omitempty"`      // an incoming-webhook URL
	Webhook   string   `json:"webhook,omitempty"`    // a URL, with SecretEnv
	SecretEnv string   `json:"secret_env,omitempty"` // webhook: the variable holding the signing secret
	Email     []string `json:"email,omitempty"`      // recipients
}

// DefaultNotificationStates are what a notification without on fires on.
var DefaultNotificationStates = []string{string(Failed), string(Crashed)}

// NotificationPrefix begins the names of the automations a deployment's
// notifications stand for: "deployment:NAME/notifications[0]" and so on.
func NotificationPrefix(deployment string) string {
	return "deployment:" + deployment + "/notifications["
}

// NotificationAutomations are the automations d's notifications stand for,
// in order, named after the deployment and the notification's index.
func (d DeploymentSpec) NotificationAutomations() []AutomationSpec {
	specs := make([]AutomationSpec, 0, len(d.Notifications))
	for i, n := range d.Notifications {
		on := n.On
		if len(on) == 0 {
			on = DefaultNotificationStates
		}
		var a AutomationAction
		switch {
		case n.Slack != "":
			a = AutomationAction{Type: ActionSlack, URL: n.Slack}
		case n.Webhook != "":
			a = AutomationAction{Type: ActionWebhook, URL: n.Webhook, SecretEnv: n.SecretEnv}
		default:
			a = AutomationAction{Type: ActionEmail, To: n.Email}
		}
		specs = append(specs, AutomationSpec{
			Name:        NotificationPrefix(d.Name) + strconv.Itoa(i) + "]",
			Description: "from the notifications of deployment " + d.Name + ": deploying it changes this automation",
			Trigger:     AutomationTrigger{Type: TriggerState, Of: StreamFlowRun, States: slices.Clone(on)},
			Filter:      AutomationFilter{Deployments: []string{d.Name}},
			Actions:     []AutomationAction{a},
		})
	}
	return specs
}

// validateNotifications adds the problems of d's notifications, named
// "notifications[0].slack" and so on.
func (d *DeploymentSpec) validateNotifications(p *Problems) {
	if len(d.Notifications) > 20 {
		p.Add("notifications", "at most 20, got %d", len(d.Notifications))
	}
	for i, n := range d.Notifications {
		f := "notifications[" + strconv.Itoa(i) + "]"
		switch kinds := btoi(n.Slack != "") + btoi(n.Webhook != "") + btoi(len(n.Email) > 0); {
		case kinds == 0:
			p.Add(f, "set one of slack, webhook or email")
		case kinds > 1:
			p.Add(f, "set only one of slack, webhook or email")
		}
		for j, st := range n.On {
			if !StateType(st).Valid() && !slices.Contains(stateNames, st) {
				p.Add(f+".on["+strconv.Itoa(j)+"]", "unknown state %q (a type such as FAILED or a named state such as TimedOut)", st)
			}
		}
		for _, kv := range [][2]string{{"slack", n.Slack}, {"webhook", n.Webhook}} {
			key, u := kv[0], kv[1]
			if pu, err := url.Parse(u); u != "" && (err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "") {
				p.Add(f+"."+key, "must be an absolute http or https URL")
			}
		}
		switch {
		case n.Webhook != "" && !envName.MatchString(n.SecretEnv):
			p.Add(f+".secret_env", "a webhook needs the name of the server's environment variable holding its signing secret")
		case n.Webhook == "" && n.SecretEnv != "":
			p.Add(f+".secret_env", "is only for a webhook")
		}
		if len(n.Email) > 0 {
			a := AutomationAction{Type: ActionEmail, To: n.Email}
			var q Problems
			a.validate(f, &q)
			for _, det := range q.Details {
				p.Add(strings.Replace(det.Field, f+".to", f+".email", 1), "%s", det.Message)
			}
		}
	}
}
