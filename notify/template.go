package notify

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/template"
	"unicode/utf8"
)

// The kinds of message text an automation may template.
const (
	KindSubject = "subject" // an email's subject: one line
	KindBody    = "body"    // an email's body: plain text
	KindSlack   = "slack"   // a Slack message's text (mrkdwn)
)

// MaxOutput caps what one template execution may produce; longer output is
// cut there. A subject is cut much shorter, at maxSubject.
const (
	MaxOutput  = 40 << 10
	maxSubject = 250
)

var defaults = map[string]string{
	KindSubject: `[Ordo] {{.Automation.Name}}: {{.Trigger.Description}}`,
	KindBody: `{{.Trigger.Description}}

Automation: {{.Automation.Name}}
{{with .FlowRun.DeploymentName}}Deployment: {{.}}
{{end}}{{with .FlowRun.Name}}Run: {{.}}
{{end}}{{with .FlowRun.State.Type}}State: {{.}}{{with $.FlowRun.State.Name}} ({{.}}){{end}}
{{end}}{{with .TaskRun.TaskName}}Task: {{.}}{{with $.TaskRun.Attempt}}, attempt {{.}}{{end}}
{{end}}{{with .TaskRun.Error}}Error: {{.}}
{{else}}{{with .FlowRun.State.Message}}Message: {{.}}
{{end}}{{end}}{{with .RunURL}}
{{.}}
{{end}}`,
	KindSlack: `*{{.Automation.Name}}*: {{.Trigger.Description}}`,
}

var funcs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"join": strings.Join,
}

// Template is a parsed message template of one kind.
type Template struct {
	kind string
	t    *template.Template
}

// Parse parses text as a template of kind (KindSubject, KindBody or
// KindSlack); empty text gives the kind's default. It executes the template
// against Sample so that a misspelt field fails here, when the automation is
// saved, with text/template's message naming it ("can't evaluate field
// Nmae"). A key of FlowRun.Parameters is not checked: the sample cannot know
// a deployment's parameters, so a missing one fails only at Execute.
func Parse(kind, text string) (*Template, error) {
	if _, ok := defaults[kind]; !ok {
		return nil, fmt.Errorf("unknown template kind %q", kind)
	}
	if strings.TrimSpace(text) == "" {
		text = defaults[kind]
	}
	t, err := template.New(kind).Option("missingkey=error").Funcs(funcs).Parse(text)
	if err != nil {
		return nil, err
	}
	check, err := template.New(kind).Option("missingkey=zero").Funcs(funcs).Parse(text)
	if err != nil {
		return nil, err
	}
	if err := check.Execute(&capped{max: MaxOutput}, Sample()); err != nil && !errors.Is(err, errCapped) {
		return nil, err
	}
	return &Template{kind: kind, t: t}, nil
}

// Kind is the kind the template was parsed as.
func (t *Template) Kind() string { return t.kind }

// Execute renders the template for c, cut at MaxOutput (a subject: joined
// into one line and cut at maxSubject).
func (t *Template) Execute(c Context) (string, error) {
	limit := MaxOutput
	if t.kind == KindSubject {
		limit = maxSubject
	}
	w := &capped{max: limit}
	if err := t.t.Execute(w, c); err != nil && !errors.Is(err, errCapped) {
		return "", err
	}
	out := w.String()
	if t.kind == KindSubject {
		out = strings.Join(strings.Fields(out), " ")
	}
	return out, nil
}

var errCapped = errors.New("template output reached its cap")

// capped keeps up to max bytes and then stops the execution.
type capped struct {
	buf bytes.Buffer
	max int
	cut bool
}

func (w *capped) Write(p []byte) (int, error) {
	if room := w.max - w.buf.Len(); len(p) > room {
		w.buf.Write(p[:room])
		w.cut = true
		return room, errCapped
	}
	return w.buf.Write(p)
}

// String is the output, without a rune split by the cut.
func (w *capped) String() string {
	b := w.buf.Bytes()
	if w.cut {
		for len(b) > 0 {
			if r, size := utf8.DecodeLastRune(b); r != utf8.RuneError || size > 1 {
				break
			}
			b = b[:len(b)-1]
		}
	}
	return string(b)
}
