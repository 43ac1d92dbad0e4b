package domain

import (
	"net/mail"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Action types of automations besides ActionWebhook.
const (
	ActionSlack           = "slack"            // post a message to a Slack incoming webhook
	ActionEmail           = "email"            // send an email over SMTP
	ActionCancelRun       = "cancel_run"       // cancel the triggering flow run
	ActionPauseDeployment = "pause_deployment" // pause the triggering run's deployment, or the one named
	ActionRunDeployment   = "run_deployment"   // start a run of a deployment
)

// Sources of a run_deployment action's from_run that are not a parameter
// of the triggering run.
const (
	FromRunID         = "$run_id"
	FromRunName       = "$run_name"
	FromRunDeployment = "$deployment"
)

// MaxEmailRecipients bounds an email action's to.
const MaxEmailRecipients = 50

// AutomationAction is one thing an automation does when it fires. Which
// fields an action takes depends on its type (see docs/AUTOMATIONS.md);
// Text, Subject and Body are Go templates over notify.Context.
type AutomationAction struct {
	Type string `json:"type"`
	URL  string `json:"url,omitempty"` // webhook, slack
	// SecretEnv names the server's environment variable that holds the
	// signing secret; the secret itself is never stored.
	SecretEnv string `json:"secret_env,omitempty"`

	Text    string   `json:"text,omitempty"`    // slack: the message's text
	To      []string `json:"to,omitempty"`      // email: recipients
	Subject string   `json:"subject,omitempty"` // email
	Body    string   `json:"body,omitempty"`    // email: plain text

	// Deployment is the deployment run_deployment starts (required) or
	// pause_deployment pauses (defaults to the triggering run's).
	Deployment string `json:"deployment,omitempty"`
	// Parameters of the run run_deployment starts, over the deployment's.
	Parameters map[string]any `json:"parameters,omitempty"`
	// FromRun maps a parameter of the new run to where its value comes
	// from: a parameter of the triggering run, or FromRunID, FromRunName,
	// FromRunDeployment.
	FromRun map[string]string `json:"from_run,omitempty"`
}

// actionFields are the optional fields (JSON names) each action type takes.
var actionFields = map[string][]string{
	ActionWebhook:         {"url", "secret_env"},
	ActionSlack:           {"url", "text"},
	ActionEmail:           {"to", "subject", "body"},
	ActionCancelRun:       {},
	ActionPauseDeployment: {"deployment"},
	ActionRunDeployment:   {"deployment", "parameters", "from_run"},
}

// Templates returns the action's template fields that are set, by JSON
// name: what must parse when the automation is saved.
func (a AutomationAction) Templates() map[string]string {
	t := map[string]string{}
	for name, v := range map[string]string{"text": a.Text, "subject": a.Subject, "body": a.Body} {
		if v != "" {
			t[name] = v
		}
	}
	return t
}

// set returns the JSON names of the fields that are set, but type.
func (a AutomationAction) set() []string {
	var s []string
	add := func(name string, on bool) {
		if on {
			s = append(s, name)
		}
	}
	add("url", a.URL != "")
	add("secret_env", a.SecretEnv != "")
	add("text", a.Text != "")
	add("to", len(a.To) > 0)
	add("subject", a.Subject != "")
	add("body", a.Body != "")
	add("deployment", a.Deployment != "")
	add("parameters", len(a.Parameters) > 0)
	add("from_run", len(a.FromRun) > 0)
	return s
}

// validate adds a's problems under field (e.g. "actions[0]").
func (a AutomationAction) validate(field string, p *Problems) {
	allowed, known := actionFields[a.Type]
	switch {
	case a.Type == "":
		p.Add(field+".type", "is required (one of %s)", strings.Join(actionTypes, ", "))
		return
	case !known:
		p.Add(field+".type", "unknown action type %q (one of %s)", a.Type, strings.Join(actionTypes, ", "))
		return
	}
	for _, f := range a.set() {
		if !slices.Contains(allowed, f) {
			p.Add(field+"."+f, "is not a field of %s actions", a.Type)
		}
	}
	switch a.Type {
	case ActionWebhook, ActionSlack:
		u, err := url.Parse(a.URL)
		if a.URL == "" {
			p.Add(field+".url", "is required")
		} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.Add(field+".url", "must be an absolute http or https URL")
		}
		if a.Type == ActionWebhook && !envName.MatchString(a.SecretEnv) {
			p.Add(field+".secret_env", "must name an environment variable of the server (letters, digits, _)")
		}
	case ActionEmail:
		if len(a.To) == 0 {
			p.Add(field+".to", "name at least one recipient")
		} else if len(a.To) > MaxEmailRecipients {
			p.Add(field+".to", "names more than %d recipients", MaxEmailRecipients)
		}
		for i, to := range a.To {
			if _, err := mail.ParseAddress(to); err != nil {
				p.Add(field+".to["+strconv.Itoa(i)+"]", "%q is not an email address", to)
			}
		}
	case ActionRunDeployment:
		if strings.TrimSpace(a.Deployment) == "" {
			p.Add(field+".deployment", "is required: the name of the deployment to run")
		}
		for name, src := range a.FromRun {
			if _, both := a.Parameters[name]; both {
				p.Add(field+".from_run."+name, "is also in parameters")
			}
			if strings.TrimSpace(src) == "" {
				p.Add(field+".from_run."+name, "must name a parameter of the triggering run, or %s, %s or %s", FromRunID, FromRunName, FromRunDeployment)
			} else if strings.HasPrefix(src, "$") && !slices.Contains([]string{FromRunID, FromRunName, FromRunDeployment}, src) {
				p.Add(field+".from_run."+name, "unknown source %q (a parameter name, or %s, %s or %s)", src, FromRunID, FromRunName, FromRunDeployment)
			}
		}
	}
}
