package domain_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
)

func validAutomation() domain.AutomationSpec {
	return domain.AutomationSpec{
		Name:    "ml failures to ops",
		Trigger: domain.AutomationTrigger{Type: "state", Of: "flow_run", States: []string{"FAILED", "TimedOut"}},
		Filter:  domain.AutomationFilter{Deployments: []string{"model_*"}, Tags: []string{"prod"}},
		Actions: []domain.AutomationAction{{Type: "webhook", URL: "https://hooks.example.com/ordo", SecretEnv: "ORDO_HOOK_SECRET"}},
	}
}

func TestAutomationSpecValidateNamesTheField(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		edit func(*domain.AutomationSpec)
		want string
	}{
		"NoName":             {func(s *domain.AutomationSpec) { s.Name = " " }, "name: is required"},
		"UnknownTrigger":     {func(s *domain.AutomationSpec) { s.Trigger.Type = "sometimes" }, `trigger.type: unknown trigger type "sometimes" (one of state, running_longer_than`},
		"BadOf":              {func(s *domain.AutomationSpec) { s.Trigger.Of = "deployment" }, "trigger.of: must be one of flow_run, task_run"},
		"UnknownState":       {func(s *domain.AutomationSpec) { s.Trigger.States = []string{"FAILED", "Exploded"} }, `trigger.states[1]: unknown state "Exploded"`},
		"BadGlob":            {func(s *domain.AutomationSpec) { s.Filter.Deployments = []string{"model_["} }, "filter.deployments[0]"},
		"NoActions":          {func(s *domain.AutomationSpec) { s.Actions = nil }, "actions: name at least one action"},
		"UnknownAction":      {func(s *domain.AutomationSpec) { s.Actions[0].Type = "pigeon" }, `actions[0].type: unknown action type "pigeon" (one of webhook, slack, email`},
		"RelativeURL":        {func(s *domain.AutomationSpec) { s.Actions[0].URL = "/hook" }, "actions[0].url: must be an absolute http or https URL"},
		"NoSecretEnv":        {func(s *domain.AutomationSpec) { s.Actions[0].SecretEnv = "" }, "actions[0].secret_env"},
		"SecretEnvIsASecret": {func(s *domain.AutomationSpec) { s.Actions[0].SecretEnv = "abc=def" }, "actions[0].secret_env"},
	}
	if err := validAutomation().Validate(); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := validAutomation()
			s.Actions = append([]domain.AutomationAction(nil), s.Actions...)
			c.edit(&s)
			err := s.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) || domain.ErrorCode(err) != domain.CodeInvalid {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestAutomationMatching(t *testing.T) {
	t.Parallel()
	s := validAutomation()
	if !s.Trigger.MatchesState(domain.State{Type: domain.Failed, Name: domain.NameFailed}) ||
		!s.Trigger.MatchesState(domain.State{Type: domain.Failed, Name: domain.NameTimedOut}) ||
		s.Trigger.MatchesState(domain.State{Type: domain.Completed, Name: domain.NameCompleted}) {
		t.Fatal("state matching is wrong")
	}
	rc := domain.RunContext{DeploymentName: "model_train", Tags: []string{"prod", "ml"}, WorkQueue: "ml", Flow: "pipeline"}
	if !s.Filter.Matches(rc) {
		t.Fatal("filter refuses a matching run")
	}
	for name, edit := range map[string]func(*domain.RunContext){
		"OtherDeployment": func(r *domain.RunContext) { r.DeploymentName = "etl" },
		"NoTag":           func(r *domain.RunContext) { r.Tags = []string{"dev"} },
	} {
		r := rc
		edit(&r)
		if s.Filter.Matches(r) {
			t.Fatalf("%s: filter lets it pass", name)
		}
	}
	if (domain.AutomationFilter{WorkQueue: "gpu"}).Matches(rc) || (domain.AutomationFilter{Flow: "other"}).Matches(rc) {
		t.Fatal("work queue or flow filter lets a run pass")
	}
}

func TestAutomationLifecycle(t *testing.T) {
	t.Parallel()
	id := uuid.New()
	a := domain.Automation{ID: id}
	var log []domain.Envelope
	step := func(cmd domain.AutomationCommand) error {
		events, err := domain.DecideAutomation(a, cmd)
		for _, e := range events {
			a = a.Apply(e, time.Now())
			a.Stream++
			log = append(log, domain.Envelope{Position: int64(len(log) + 1), StreamID: id, StreamType: e.StreamType(), Version: a.Stream, Type: e.EventType(), Event: e})
		}
		return err
	}
	if err := step(domain.PauseAutomation{}); domain.ErrorCode(err) != domain.CodeNotFound {
		t.Fatalf("pausing a missing automation: %v", err)
	}
	spec := validAutomation()
	for _, cmd := range []domain.AutomationCommand{domain.SaveAutomation{Spec: spec}, domain.PauseAutomation{}, domain.PauseAutomation{}, domain.ResumeAutomation{}} {
		if err := step(cmd); err != nil {
			t.Fatal(err)
		}
	}
	spec.Filter.Tags = []string{"staging"}
	if err := step(domain.SaveAutomation{Spec: spec}); err != nil {
		t.Fatal(err)
	}
	if changed := log[len(log)-1].Event.(domain.AutomationChanged).Changed; len(changed) != 1 || changed[0] != "filter" {
		t.Fatalf("changed = %v", changed)
	}
	if err := step(domain.DeleteAutomation{}); err != nil {
		t.Fatal(err)
	}
	if err := step(domain.ResumeAutomation{}); domain.ErrorCode(err) != domain.CodeNotFound {
		t.Fatalf("resuming a deleted automation: %v", err)
	}
	if len(log) != 5 {
		t.Fatalf("%d events, want 5 (a second pause records nothing)", len(log))
	}
	if err := domain.ValidateLog(domain.NewRegistry(), log); err != nil {
		t.Fatal(err)
	}
	fired := domain.AutomationFired{AutomationID: id, TriggerPosition: 9, TriggerType: "FlowRunFailed"}
	fid := domain.FiringID(id, 9)
	twice := append(log,
		domain.Envelope{Position: 6, StreamID: fid, StreamType: domain.StreamAutomationFiring, Version: 1, Type: fired.EventType(), Event: fired},
		domain.Envelope{Position: 7, StreamID: fid, StreamType: domain.StreamAutomationFiring, Version: 2, Type: fired.EventType(), Event: fired})
	if err := domain.ValidateLog(domain.NewRegistry(), twice); err == nil || !strings.Contains(err.Error(), "a firing is recorded once") {
		t.Fatalf("a firing recorded twice: %v", err)
	}
	afterDelete := append(log, domain.Envelope{Position: 6, StreamID: id, StreamType: domain.StreamAutomation, Version: 6, Type: "AutomationPaused", Event: domain.AutomationPaused{}})
	if err := domain.ValidateLog(domain.NewRegistry(), afterDelete); err == nil {
		t.Fatal("an event after deletion passes")
	}
}

func TestAutomationTriggerKindsNameTheField(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		trigger domain.AutomationTrigger
		want    string // "" when valid
	}{
		"RunningLongerThan":         {domain.AutomationTrigger{Type: "running_longer_than", Of: "task_run", Seconds: 60}, ""},
		"NotCompletedWithin":        {domain.AutomationTrigger{Type: "not_completed_within", Seconds: 3600}, ""},
		"NotStartedWithin":          {domain.AutomationTrigger{Type: "not_started_within", Seconds: 300}, ""},
		"ConsecutiveFailures":       {domain.AutomationTrigger{Type: "consecutive_failures", Count: 3}, ""},
		"RunningWithoutSeconds":     {domain.AutomationTrigger{Type: "running_longer_than", Of: "flow_run"}, "trigger.seconds: must be a positive number"},
		"RunningNegativeSeconds":    {domain.AutomationTrigger{Type: "running_longer_than", Of: "flow_run", Seconds: -5}, "trigger.seconds: must be a positive number"},
		"RunningWithoutOf":          {domain.AutomationTrigger{Type: "running_longer_than", Seconds: 5}, "trigger.of: must be one of flow_run, task_run"},
		"RunningWithStates":         {domain.AutomationTrigger{Type: "running_longer_than", Of: "flow_run", Seconds: 5, States: []string{"FAILED"}}, "trigger.states: applies only to state triggers"},
		"SecondsTooLong":            {domain.AutomationTrigger{Type: "not_started_within", Seconds: 400 * 24 * 3600}, "trigger.seconds: must be at most"},
		"FreshnessWithOf":           {domain.AutomationTrigger{Type: "not_completed_within", Seconds: 5, Of: "flow_run"}, "trigger.of: applies only to state and running_longer_than"},
		"FreshnessWithCount":        {domain.AutomationTrigger{Type: "not_completed_within", Seconds: 5, Count: 2}, "trigger.count: applies only to consecutive_failures"},
		"FailuresWithoutCount":      {domain.AutomationTrigger{Type: "consecutive_failures"}, "trigger.count: must be at least 1"},
		"FailuresWithSeconds":       {domain.AutomationTrigger{Type: "consecutive_failures", Count: 2, Seconds: 5}, "trigger.seconds: applies only to running_longer_than"},
		"StateWithSeconds":          {domain.AutomationTrigger{Type: "state", Of: "flow_run", States: []string{"FAILED"}, Seconds: 5}, "trigger.seconds: applies only to"},
		"StateWithCount":            {domain.AutomationTrigger{Type: "state", Of: "flow_run", States: []string{"FAILED"}, Count: 1}, "trigger.count: applies only to"},
		"NotStartedWithoutSeconds":  {domain.AutomationTrigger{Type: "not_started_within"}, "trigger.seconds: must be a positive number of seconds for a not_started_within trigger"},
		"NotCompletedWithoutSecond": {domain.AutomationTrigger{Type: "not_completed_within"}, "trigger.seconds: must be a positive number"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := validAutomation()
			s.Trigger = c.trigger
			err := s.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("valid trigger refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || domain.ErrorCode(err) != domain.CodeInvalid):
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}
