package notify_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ordoflow/ordo/notify"
)

// leaves lists the template paths of every field of t, descending into
// structs (a time.Time is a value of its own).
func leaves(t reflect.Type, prefix string) []string {
	var out []string
	for f := range t.Fields() {
		path := prefix + "." + f.Name
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Time]() {
			out = append(out, leaves(f.Type, path)...)
			continue
		}
		out = append(out, path)
	}
	return out
}

// TestEveryContextFieldIsUsable: each field of Context, found by
// reflection so that a new one is covered too, parses and renders what the
// sample holds.
func TestEveryContextFieldIsUsable(t *testing.T) {
	t.Parallel()
	sample := notify.Sample()
	paths := leaves(reflect.TypeFor[notify.Context](), "")
	if len(paths) < 25 {
		t.Fatalf("only %d fields found: %v", len(paths), paths)
	}
	for _, path := range paths {
		tpl, err := notify.Parse(notify.KindBody, "{{"+path+"}}")
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		got, err := tpl.Execute(sample)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		v := reflect.ValueOf(sample)
		for _, name := range strings.Split(path[1:], ".") {
			v = v.FieldByName(name)
		}
		if want := fmt.Sprint(v.Interface()); got != want || got == "" {
			t.Errorf("%s rendered %q, want %q", path, got, want)
		}
	}
}

func TestParseNamesAMisspeltField(t *testing.T) {
	t.Parallel()
	for _, text := range []string{"{{.Nmae}}", "run {{.FlowRun.Nmae}} failed", "{{with .TaskRun}}{{.Nmae}}{{end}}"} {
		_, err := notify.Parse(notify.KindSlack, text)
		if err == nil || !strings.Contains(err.Error(), "can't evaluate field Nmae") {
			t.Errorf("Parse(%q) = %v, want an error naming Nmae", text, err)
		}
	}
	if _, err := notify.Parse(notify.KindBody, "{{.FlowRun.Name"); err == nil {
		t.Error("a syntax error must fail at Parse")
	}
	if _, err := notify.Parse("sms", "hi"); err == nil {
		t.Error("an unknown kind must fail")
	}
}

// TestParameterKeysAreCheckedWhenRendered: the sample cannot know a
// deployment's parameters, so any key passes Parse; a key the run does not
// have fails at Execute (missingkey=error) instead of rendering "<no value>".
func TestParameterKeysAreCheckedWhenRendered(t *testing.T) {
	t.Parallel()
	tpl, err := notify.Parse(notify.KindBody, "table {{.FlowRun.Parameters.table}}, lr {{.FlowRun.Parameters.learning_rate}}")
	if err != nil {
		t.Fatal(err)
	}
	c := notify.Sample()
	if _, err := tpl.Execute(c); err == nil || !strings.Contains(err.Error(), "learning_rate") {
		t.Errorf("a missing parameter rendered without an error naming it: %v", err)
	}
	c.FlowRun.Parameters = map[string]any{"table": "houses", "learning_rate": 0.1}
	if got, err := tpl.Execute(c); err != nil || got != "table houses, lr 0.1" {
		t.Errorf("Execute = %q, %v", got, err)
	}
}

func TestDefaultTemplates(t *testing.T) {
	t.Parallel()
	c := notify.Sample()
	render := func(kind string) string {
		t.Helper()
		tpl, err := notify.Parse(kind, "  ")
		if err != nil {
			t.Fatal(err)
		}
		out, err := tpl.Execute(c)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got, want := render(notify.KindSubject), "[Ordo] ml failures to ops: flow run reached FAILED"; got != want {
		t.Errorf("subject = %q, want %q", got, want)
	}
	body := render(notify.KindBody)
	for _, want := range []string{"Deployment: model_training_validation", "Run: clever-heron", "State: FAILED (Failed)",
		"Task: train, attempt 3", "Error: ValueError: empty table", c.RunURL} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	// A firing with no run (a deployment that never completed) still reads.
	empty := notify.Context{Automation: c.Automation, Trigger: notify.Trigger{Kind: "not_completed_within", Description: "no completed run of nightly in 1h"}}
	tpl, _ := notify.Parse(notify.KindBody, "")
	if out, err := tpl.Execute(empty); err != nil || strings.Contains(out, "Run:") || !strings.Contains(out, "no completed run") {
		t.Errorf("body without a run = %q, %v", out, err)
	}
	if got := render(notify.KindSlack); !strings.Contains(got, "*ml failures to ops*") {
		t.Errorf("slack = %q", got)
	}
}

func TestExecuteOutputIsCapped(t *testing.T) {
	t.Parallel()
	c := notify.Sample()
	c.FlowRun.State.Message = strings.Repeat("é", notify.MaxOutput) // twice the cap in bytes
	tpl, err := notify.Parse(notify.KindBody, "x{{.FlowRun.State.Message}}{{.FlowRun.State.Message}}")
	if err != nil {
		t.Fatal(err)
	}
	out, err := tpl.Execute(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) > notify.MaxOutput || len(out) < notify.MaxOutput-utf8.UTFMax || !utf8.ValidString(out) {
		t.Errorf("output of %d bytes (valid UTF-8: %v), want just under %d", len(out), utf8.ValidString(out), notify.MaxOutput)
	}
	subject, _ := notify.Parse(notify.KindSubject, "{{.FlowRun.State.Message}}\nsecond line")
	c.FlowRun.State.Message = "a\r\nBcc: x@example.com " + strings.Repeat("z", 1000)
	out, err = subject.Execute(c)
	if err != nil || strings.ContainsAny(out, "\r\n") || len(out) > 250 {
		t.Errorf("subject of %d bytes %q, %v: want one line of at most 250", len(out), cut(out), err)
	}
}

func cut(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
