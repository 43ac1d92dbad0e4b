package automations

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
)

// matcher is a consumer with no database: its index and run cache only.
func matcher() *Consumer {
	return &Consumer{autos: map[uuid.UUID]domain.Automation{}, index: map[triggerKey]*bucket{},
		runs: map[uuid.UUID]runInfo{}, tasks: map[uuid.UUID]uuid.UUID{}}
}

var version = map[uuid.UUID]int64{}

func (c *Consumer) record(id uuid.UUID, e domain.Event) {
	version[id]++
	c.applyAutomation(domain.Envelope{StreamID: id, StreamType: domain.StreamAutomation, Version: version[id], Type: e.EventType(), Event: e})
}

func stateSpec(name string, states []string, deployments ...string) domain.AutomationSpec {
	return domain.AutomationSpec{Name: name, Trigger: domain.AutomationTrigger{Type: domain.TriggerState, Of: domain.StreamFlowRun, States: states},
		Filter:  domain.AutomationFilter{Deployments: deployments},
		Actions: []domain.AutomationAction{{Type: domain.ActionWebhook, URL: "https://example.com", SecretEnv: "S"}}}
}

// failure is a FlowRunFailed of a run of deployment that c has seen created.
func (c *Consumer) failure(deployment string) (domain.Envelope, domain.State) {
	run := uuid.New()
	c.runs[run] = runInfo{RunContext: domain.RunContext{FlowRunID: run, DeploymentName: deployment}}
	env := domain.Envelope{Position: 42, StreamID: run, StreamType: domain.StreamFlowRun, Type: "FlowRunFailed", Event: domain.FlowRunFailed{Message: "x"}, RecordedAt: time.Now()}
	state, _ := domain.StateReached(env.Event, env.RecordedAt)
	return env, state
}

func fired(c *Consumer, deployment string) map[string]int {
	got := map[string]int{}
	for _, f := range c.match(c.failure(deployment)) {
		got[f.automation.Spec.Name]++
	}
	return got
}

func TestIndexMatchesByTriggerAndDeployment(t *testing.T) {
	t.Parallel()
	c := matcher()
	literal, glob, both, all, empty := uuid.New(), uuid.New(), uuid.New(), uuid.New(), uuid.New()
	c.record(literal, domain.AutomationCreated{Spec: stateSpec("literal", []string{"FAILED"}, "train", "train")})
	c.record(glob, domain.AutomationCreated{Spec: stateSpec("glob", []string{"FAILED"}, "model_*")})
	c.record(both, domain.AutomationCreated{Spec: stateSpec("both", []string{"FAILED", "Failed"}, "train")})
	c.record(all, domain.AutomationCreated{Spec: stateSpec("all", []string{"CRASHED", "FAILED"})})
	c.record(empty, domain.AutomationCreated{Spec: stateSpec("empty", []string{"FAILED"}, []string{}...)})

	if got := fired(c, "train"); fmt.Sprint(got) != "map[all:1 both:1 empty:1 literal:1]" {
		t.Fatalf("train: %v", got)
	}
	if got := fired(c, "model_x"); fmt.Sprint(got) != "map[all:1 empty:1 glob:1]" {
		t.Fatalf("model_x: %v", got)
	}
	c.record(literal, domain.AutomationPaused{})
	c.record(all, domain.AutomationDeleted{})
	c.record(glob, domain.AutomationChanged{Spec: stateSpec("glob", []string{"FAILED"}, "etl"), Changed: []string{"filter"}})
	if got := fired(c, "train"); fmt.Sprint(got) != "map[both:1 empty:1]" {
		t.Fatalf("train after changes: %v", got)
	}
	if got := fired(c, "etl"); fmt.Sprint(got) != "map[empty:1 glob:1]" {
		t.Fatalf("etl after changes: %v", got)
	}
	c.record(literal, domain.AutomationResumed{})
	if got := fired(c, "train"); got["literal"] != 1 {
		t.Fatalf("train after resume: %v", got)
	}
	for _, id := range []uuid.UUID{literal, glob, both, empty} {
		c.record(id, domain.AutomationDeleted{})
	}
	if len(c.index) != 0 {
		t.Fatalf("index after deleting all: %v", c.index)
	}
}

// The cost of matching a failure grows with the automations that can match
// it: with one automation per deployment, 10,000 cost about what 10 do.
func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{10, 10_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			c := matcher()
			for i := range n {
				c.record(uuid.New(), domain.AutomationCreated{Spec: stateSpec(fmt.Sprint(i), []string{"FAILED", "CRASHED"}, fmt.Sprintf("deployment_%d", i))})
			}
			env, state := c.failure("deployment_7")
			b.ResetTimer()
			for range b.N {
				if fs := c.match(env, state); len(fs) != 1 {
					b.Fatalf("%d firings", len(fs))
				}
			}
		})
	}
}
