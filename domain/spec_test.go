package domain_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ordoflow/ordo/domain"
)

// designYAML is the deployment body of DESIGN.md.
const designYAML = `
name: model_training_validation
description: train and validate the house-price model
work_queue: ml
tags: [prod]
parameters: {table: houses, test_size: 0.2}
schedule: {interval_seconds: 300}          # or {cron: "*/5 * * * *", timezone: Europe/Paris}
flow:
  name: ml-pipeline
  tasks:
    - name: load_data
      command: [python3, examples/ml-pipeline/load_data.py]
      retries: 3
      retry_delay_seconds: 5               # or a list [1, 5, 30]; retry_backoff: exponential; retry_jitter_factor
      timeout_seconds: 60
    - name: preprocess
      command: [python3, examples/ml-pipeline/preprocess.py]
      depends_on: [load_data]
      cache: {key: inputs, expiration_seconds: 3600}
`

const designJSON = `{
  "name": "model_training_validation",
  "description": "train and validate the house-price model",
  "work_queue": "ml",
  "tags": ["prod"],
  "parameters": {"table": "houses", "test_size": 0.2},
  "schedule": {"interval_seconds": 300},
  "flow": {
    "name": "ml-pipeline",
    "tasks": [
      {"name": "load_data", "command": ["python3", "examples/ml-pipeline/load_data.py"],
       "retries": 3, "retry_delay_seconds": 5, "timeout_seconds": 60},
      {"name": "preprocess", "command": ["python3", "examples/ml-pipeline/preprocess.py"],
       "depends_on": ["load_data"], "cache": {"key": "inputs", "expiration_seconds": 3600}}
    ]
  }
}`

func designSpec() domain.DeploymentSpec {
	return domain.DeploymentSpec{
		Name:        "model_training_validation",
		Description: "train and validate the house-price model",
		WorkQueue:   "ml",
		Tags:        []string{"prod"},
		Parameters:  map[string]any{"table": "houses", "test_size": 0.2},
		Schedule:    &domain.Schedule{IntervalSeconds: 300},
		Flow: domain.FlowSpec{Name: "ml-pipeline", Tasks: []domain.TaskSpec{
			{
				Name: "load_data", Command: []string{"python3", "examples/ml-pipeline/load_data.py"},
				Retries: 3, RetryDelaySeconds: domain.RetryDelays{5}, TimeoutSeconds: 60,
			},
			{
				Name: "preprocess", Command: []string{"python3", "examples/ml-pipeline/preprocess.py"},
				DependsOn: []string{"load_data"}, Cache: &domain.CachePolicy{Key: "inputs", ExpirationSeconds: 3600},
			},
		}},
		ConcurrencyPolicy: domain.ConcurrencyEnqueue,
		CatchUp:           domain.CatchUpLatest,
	}
}

func TestParseDeploymentDesignExample(t *testing.T) {
	t.Parallel()

	want := designSpec()
	for name, parse := range map[string]func() (domain.DeploymentSpec, error){
		"YAML":     func() (domain.DeploymentSpec, error) { return domain.ParseDeploymentYAML([]byte(designYAML)) },
		"JSON":     func() (domain.DeploymentSpec, error) { return domain.ParseDeployment([]byte(designJSON)) },
		"AutoYAML": func() (domain.DeploymentSpec, error) { return domain.ParseDeploymentAuto([]byte(designYAML)) },
		"AutoJSON": func() (domain.DeploymentSpec, error) { return domain.ParseDeploymentAuto([]byte("\n " + designJSON)) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := parse()
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseDeploymentDefaults(t *testing.T) {
	t.Parallel()

	d, err := domain.ParseDeployment([]byte(`{"name":"d","flow":{"name":"f","tasks":[{"name":"a","handler":"h"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if d.WorkQueue != "default" || d.CatchUp != "latest" || d.ConcurrencyPolicy != "enqueue" {
		t.Fatalf("defaults: work_queue %q, catch_up %q, concurrency_policy %q", d.WorkQueue, d.CatchUp, d.ConcurrencyPolicy)
	}
}

func TestParseDeploymentRoundTrip(t *testing.T) {
	t.Parallel()

	d, err := domain.ParseDeploymentYAML([]byte(`
name: d
parameters_schema:
  type: object
  properties: {n: {type: integer}}
schedule: {interval_seconds: 60, anchor: "2026-01-01T00:00:30Z"}
flow:
  name: f
  tasks:
    - {name: a, command: [echo], retry_delay_seconds: [1, 5, 30], env: {A: "1"}, inherit_env: [HOME]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(d.ParametersSchema), `{"type":"object","properties":{"n":{"type":"integer"}}}`; got != want {
		t.Errorf("parameters_schema = %s, want %s", got, want)
	}
	if want := time.Date(2026, 1, 1, 0, 0, 30, 0, time.UTC); d.Schedule.Anchor == nil || !d.Schedule.Anchor.Equal(want) {
		t.Errorf("anchor = %v, want %v", d.Schedule.Anchor, want)
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"retry_delay_seconds":[1,5,30]`) {
		t.Errorf("marshalled: %s", b)
	}
	again, err := domain.ParseDeployment(b)
	if err != nil {
		t.Fatalf("reparse %s: %v", b, err)
	}
	b2, _ := json.Marshal(again)
	if string(b) != string(b2) {
		t.Fatalf("round trip changed the spec:\n%s\n%s", b, b2)
	}
}

func TestRetryDelaysJSON(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name, in string
		want     domain.RetryDelays
		out      string
	}{
		{"Number", `5`, domain.RetryDelays{5}, `5`},
		{"List", `[1, 5, 30]`, domain.RetryDelays{1, 5, 30}, `[1,5,30]`},
		{"ListOfOne", `[2.5]`, domain.RetryDelays{2.5}, `2.5`},
		{"Null", `null`, nil, `null`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got domain.RetryDelays
			if err := json.Unmarshal([]byte(tt.in), &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			out, err := json.Marshal(got)
			if err != nil || string(out) != tt.out {
				t.Fatalf("marshal = %s, %v; want %s", out, err, tt.out)
			}
		})
	}
	var r domain.RetryDelays
	if err := json.Unmarshal([]byte(`"5s"`), &r); err == nil {
		t.Fatal("a string was accepted as retry delays")
	}
}

// requireProblem fails unless err is an invalid *domain.Error with a detail
// about field whose message contains msg.
func requireProblem(t *testing.T, err error, field, msg string) {
	t.Helper()
	var e *domain.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *domain.Error", err, err)
	}
	if e.Code != domain.CodeInvalid {
		t.Fatalf("code = %q, want invalid", e.Code)
	}
	for _, d := range e.Details {
		if d.Field == field && strings.Contains(d.Message, msg) {
			return
		}
	}
	t.Fatalf("details %q: want field %q with a message containing %q", e.Details, field, msg)
}

func TestParseDeploymentErrors(t *testing.T) {
	t.Parallel()

	const tasks = `"flow":{"name":"f","tasks":[{"name":"a","command":["true"]},{"name":"b","handler":"h"}]}`
	tests := []struct {
		name, body   string
		field, msg   string // a detail; field "" checks only that the message contains msg
		errorMessage string // the error text contains it, if set
	}{
		{name: "UnknownTaskField", body: `{"name":"d","flow":{"name":"f","tasks":[{"name":"a","command":["true"]},{"name":"b","handler":"h","retires":3}]}}`,
			field: "flow.tasks[1].retires", msg: "unknown field", errorMessage: "flow.tasks[1].retires: unknown field"},
		{name: "UnknownTopLevelField", body: `{"name":"d","nmae":"x",` + tasks + `}`, field: "nmae", msg: "unknown field"},
		{name: "UnknownScheduleField", body: `{"name":"d","schedule":{"every":5},` + tasks + `}`, field: "schedule.every", msg: "unknown field"},
		{name: "UnknownCacheField", body: `{"name":"d","flow":{"name":"f","tasks":[{"name":"a","command":["x"],"cache":{"key":"inputs","ttl":5}}]}}`,
			field: "flow.tasks[0].cache.ttl", msg: "unknown field"},
		{name: "FieldNamesAreCaseSensitive", body: `{"Name":"d",` + tasks + `}`, field: "Name", msg: "unknown field"},
		{name: "StringForInteger", body: `{"name":"d","flow":{"name":"f","tasks":[{"name":"a","command":["x"],"retries":"3"}]}}`,
			field: "flow.tasks[0].retries", msg: "must be an integer"},
		{name: "FractionForInteger", body: `{"name":"d","flow":{"name":"f","tasks":[{"name":"a","command":["x"],"retries":1.5}]}}`,
			field: "flow.tasks[0].retries", msg: "must be an integer"},
		{name: "NumberForString", body: `{"name":5,` + tasks + `}`, field: "name", msg: "must be a string"},
		{name: "StringCommand", body: `{"name":"d","flow":{"name":"f","tasks":[{"name":"a","command":"python3 x.py"}]}}`,
			field: "flow.tasks[0].command", msg: "must be a list"},
		{name: "ObjectForList", body: `{"name":"d","flow":{"name":"f","tasks":{}}}`, field: "flow.tasks", msg: "must be a list"},
		{name: "StringRetryDelay", body: `{"name":"d","flow":{"name":"f","tasks":[{"name":"a","command":["x"],"retry_delay_seconds":[1,"5s"]}]}}`,
			field: "flow.tasks[0].retry_delay_seconds[1]", msg: "must be a number"},
		{name: "HugeNumber", body: `{"name":"d","flow":{"name":"f","tasks":[{"name":"a","command":["x"],"timeout_seconds":1e999}]}}`,
			field: "flow.tasks[0].timeout_seconds", msg: "out of range"},
		{name: "NumberEnvValue", body: `{"name":"d","flow":{"name":"f","tasks":[{"name":"a","command":["x"],"env":{"A":1}}]}}`,
			field: "flow.tasks[0].env.A", msg: "must be a string"},
		{name: "BadAnchor", body: `{"name":"d","schedule":{"interval_seconds":60,"anchor":"yesterday"},` + tasks + `}`,
			field: "schedule.anchor", msg: "RFC 3339"},
		{name: "ValidationAfterParsing", body: `{"name":"d","flow":{"name":"f","tasks":[{"name":"a","command":["x"],"depends_on":["zz"]}]}}`,
			field: "flow.tasks[0].depends_on[0]", msg: `unknown task "zz"`},
		{name: "TrailingData", body: `{"name":"d",` + tasks + `} {}`, errorMessage: "data after"},
		{name: "TrailingGarbage", body: `{"name":"d",` + tasks + `}x`, errorMessage: "data after"},
		{name: "NotAnObject", body: `["d"]`, errorMessage: "must be an object"},
		{name: "SyntaxError", body: `{"name": "d",}`, errorMessage: "invalid JSON at byte"},
		{name: "Truncated", body: `{"name": "d"`, errorMessage: "unexpected end"},
		{name: "Empty", body: ``, errorMessage: "unexpected end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := domain.ParseDeployment([]byte(tt.body))
			if err == nil {
				t.Fatal("no error")
			}
			if domain.ErrorCode(err) != domain.CodeInvalid {
				t.Fatalf("code = %q (%v), want invalid", domain.ErrorCode(err), err)
			}
			if tt.field != "" {
				requireProblem(t, err, tt.field, tt.msg)
			}
			if !strings.Contains(err.Error(), tt.errorMessage) {
				t.Fatalf("error %q does not contain %q", err, tt.errorMessage)
			}
		})
	}
}

func TestParseDeploymentYAMLErrors(t *testing.T) {
	t.Parallel()

	tests := []struct{ name, body, want string }{
		{"UnknownField", "name: d\nflow:\n  name: f\n  tasks:\n    - {name: a, command: [x]}\n    - {name: b, command: [x], retires: 3}\n",
			"flow.tasks[1].retires: unknown field"},
		{"BadSyntax", "name: d\nflow: [\n", "invalid YAML"},
		{"Scalar", "just a string\n", "must be an object"},
		{"EmptyDocument", "", "must be an object"},
		{"Cycle", "name: d\nflow:\n  name: f\n  tasks:\n    - {name: a, command: [x], depends_on: [b]}\n    - {name: b, command: [x], depends_on: [a]}\n",
			"cycle: a -> b -> a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := domain.ParseDeploymentYAML([]byte(tt.body))
			if domain.ErrorCode(err) != domain.CodeInvalid || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want an invalid error containing %q", err, tt.want)
			}
		})
	}
}

// validDeployment returns a valid deployment with a command, a handler and a
// sub-flow task, a -> b -> c.
func validDeployment() domain.DeploymentSpec {
	return domain.DeploymentSpec{
		Name:       "d",
		Parameters: map[string]any{"table": "houses", "test_size": 0.2},
		Flow: domain.FlowSpec{Name: "f", Tasks: []domain.TaskSpec{
			{Name: "a", Command: []string{"true"}},
			{Name: "b", Handler: "h", DependsOn: []string{"a"}},
			{Name: "c", Deployment: "child", DependsOn: []string{"b"}},
		}},
	}
}

const paramsSchema = `{
  "type": "object",
  "required": ["table"],
  "properties": {
    "table": {"type": "string"},
    "test_size": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "columns": {"type": "array", "items": {"type": "string"}}
  }
}`

func TestDeploymentValidate(t *testing.T) {
	t.Parallel()

	task := func(d *domain.DeploymentSpec, i int) *domain.TaskSpec { return &d.Flow.Tasks[i] }
	tests := []struct {
		name       string
		mutate     func(d *domain.DeploymentSpec)
		field, msg string
	}{
		{"MissingName", func(d *domain.DeploymentSpec) { d.Name = "" }, "name", "required"},
		{"BadName", func(d *domain.DeploymentSpec) { d.Name = "my deployment" }, "name", "not a valid name"},
		{"NameStartsWithDash", func(d *domain.DeploymentSpec) { d.Name = "-d" }, "name", "not a valid name"},
		{"NameTooLong", func(d *domain.DeploymentSpec) { d.Name = strings.Repeat("x", 101) }, "name", "not a valid name"},
		{"BadWorkQueue", func(d *domain.DeploymentSpec) { d.WorkQueue = "gpu queue" }, "work_queue", "not a valid name"},
		{"BadTag", func(d *domain.DeploymentSpec) { d.Tags = []string{"ok", "no spaces"} }, "tags[1]", "not a valid tag"},
		{"TagTooLong", func(d *domain.DeploymentSpec) { d.Tags = []string{strings.Repeat("t", 101)} }, "tags[0]", "not a valid tag"},
		{"TooManyTags", func(d *domain.DeploymentSpec) {
			for i := range 51 {
				d.Tags = append(d.Tags, fmt.Sprint("t", i))
			}
		}, "tags", "at most 50 tags"},
		{"NegativeConcurrencyLimit", func(d *domain.DeploymentSpec) { d.ConcurrencyLimit = -1 }, "concurrency_limit", "0 (unlimited) or more"},
		{"UnknownConcurrencyPolicy", func(d *domain.DeploymentSpec) { d.ConcurrencyPolicy = "cancel_old" }, "concurrency_policy", `got "cancel_old"`},
		{"UnknownCatchUp", func(d *domain.DeploymentSpec) { d.CatchUp = "some" }, "catch_up", `got "some"`},

		{"MissingFlowName", func(d *domain.DeploymentSpec) { d.Flow.Name = "" }, "flow.name", "required"},
		{"NoTasks", func(d *domain.DeploymentSpec) { d.Flow.Tasks = nil }, "flow.tasks", "at least one task"},
		{"TooManyTasks", func(d *domain.DeploymentSpec) {
			d.Flow.Tasks = make([]domain.TaskSpec, domain.MaxTasksPerFlow+1)
		}, "flow.tasks", "at most 20000 tasks"},
		{"MissingTaskName", func(d *domain.DeploymentSpec) { task(d, 0).Name = "" }, "flow.tasks[0].name", "required"},
		{"BadTaskName", func(d *domain.DeploymentSpec) { task(d, 0).Name = "a/b" }, "flow.tasks[0].name", "not a valid name"},
		{"DuplicateTaskName", func(d *domain.DeploymentSpec) { task(d, 2).Name = "a" }, "flow.tasks[2].name", `duplicate task name "a"`},
		{"NoKind", func(d *domain.DeploymentSpec) { task(d, 0).Command = nil }, "flow.tasks[0]", "set one of command, handler or deployment"},
		{"TwoKinds", func(d *domain.DeploymentSpec) { task(d, 0).Handler = "h" }, "flow.tasks[0]", "only one of command, handler or deployment"},
		{"EmptyCommand", func(d *domain.DeploymentSpec) { task(d, 0).Command = []string{} }, "flow.tasks[0].command", "must not be empty"},
		{"EmptyProgram", func(d *domain.DeploymentSpec) { task(d, 0).Command = []string{" ", "x"} }, "flow.tasks[0].command[0]", "program to run must not be empty"},
		{"BadHandlerName", func(d *domain.DeploymentSpec) { task(d, 1).Handler = "pkg.Func()" }, "flow.tasks[1].handler", "not a valid name"},
		{"BadSubFlowName", func(d *domain.DeploymentSpec) { task(d, 2).Deployment = "child deployment" }, "flow.tasks[2].deployment", "not a valid name"},
		{"SubFlowOfItself", func(d *domain.DeploymentSpec) { task(d, 2).Deployment = "d" }, "flow.tasks[2].deployment", "cannot run itself"},
		{"BadTaskWorkQueue", func(d *domain.DeploymentSpec) { task(d, 0).WorkQueue = "*" }, "flow.tasks[0].work_queue", "not a valid name"},
		{"BadTaskTag", func(d *domain.DeploymentSpec) { task(d, 0).Tags = []string{""} }, "flow.tasks[0].tags[0]", "not a valid tag"},

		{"UnknownDependency", func(d *domain.DeploymentSpec) { task(d, 1).DependsOn = []string{"zz"} }, "flow.tasks[1].depends_on[0]", `unknown task "zz"`},
		{"SelfDependency", func(d *domain.DeploymentSpec) { task(d, 1).DependsOn = []string{"a", "b"} }, "flow.tasks[1].depends_on[1]", `task "b" depends on itself`},
		{"DuplicateDependency", func(d *domain.DeploymentSpec) { task(d, 1).DependsOn = []string{"a", "a"} }, "flow.tasks[1].depends_on[1]", `duplicate dependency "a"`},
		{"Cycle", func(d *domain.DeploymentSpec) { task(d, 0).DependsOn = []string{"c"} }, "flow.tasks[0].depends_on[0]", "cycle: a -> b -> c -> a"},
		{"CycleNotThroughFirstTask", func(d *domain.DeploymentSpec) {
			task(d, 1).DependsOn = []string{"a", "c"}
		}, "flow.tasks[1].depends_on[1]", "cycle: b -> c -> b"},

		{"NegativeRetries", func(d *domain.DeploymentSpec) { task(d, 0).Retries = -1 }, "flow.tasks[0].retries", "between 0 and 100"},
		{"TooManyRetries", func(d *domain.DeploymentSpec) { task(d, 0).Retries = 101 }, "flow.tasks[0].retries", "between 0 and 100"},
		{"NegativeRetryDelay", func(d *domain.DeploymentSpec) { task(d, 0).RetryDelaySeconds = domain.RetryDelays{-1} }, "flow.tasks[0].retry_delay_seconds", "between 0 and 86400"},
		{"RetryDelayOverADay", func(d *domain.DeploymentSpec) { task(d, 0).RetryDelaySeconds = domain.RetryDelays{1, 86401} }, "flow.tasks[0].retry_delay_seconds[1]", "between 0 and 86400"},
		{"TooManyRetryDelays", func(d *domain.DeploymentSpec) { task(d, 0).RetryDelaySeconds = make(domain.RetryDelays, 101) }, "flow.tasks[0].retry_delay_seconds", "at most 100 delays"},
		{"UnknownBackoff", func(d *domain.DeploymentSpec) { task(d, 0).RetryBackoff = "linear" }, "flow.tasks[0].retry_backoff", `got "linear"`},
		{"ExponentialBackoffWithList", func(d *domain.DeploymentSpec) {
			task(d, 0).RetryBackoff, task(d, 0).RetryDelaySeconds = "exponential", domain.RetryDelays{1, 2}
		}, "flow.tasks[0].retry_backoff", "single retry_delay_seconds"},
		{"JitterAboveOne", func(d *domain.DeploymentSpec) { task(d, 0).RetryJitterFactor = 1.5 }, "flow.tasks[0].retry_jitter_factor", "between 0 and 1"},
		{"NegativeJitter", func(d *domain.DeploymentSpec) { task(d, 0).RetryJitterFactor = -0.1 }, "flow.tasks[0].retry_jitter_factor", "between 0 and 1"},
		{"NegativeTimeout", func(d *domain.DeploymentSpec) { task(d, 0).TimeoutSeconds = -1 }, "flow.tasks[0].timeout_seconds", "at most 604800"},
		{"TimeoutOverAWeek", func(d *domain.DeploymentSpec) { task(d, 0).TimeoutSeconds = 604801 }, "flow.tasks[0].timeout_seconds", "at most 604800"},

		{"MissingCacheKey", func(d *domain.DeploymentSpec) { task(d, 0).Cache = &domain.CachePolicy{} }, "flow.tasks[0].cache.key", "required"},
		{"UnclosedCacheTemplate", func(d *domain.DeploymentSpec) { task(d, 0).Cache = &domain.CachePolicy{Key: "{{parameters.table"} }, "flow.tasks[0].cache.key", `without a closing "}}"`},
		{"UnknownCachePlaceholder", func(d *domain.DeploymentSpec) { task(d, 0).Cache = &domain.CachePolicy{Key: "{{table}}"} }, "flow.tasks[0].cache.key", "unknown placeholder {{table}}"},
		{"CacheInputNotUpstream", func(d *domain.DeploymentSpec) {
			task(d, 2).Cache = &domain.CachePolicy{Key: "{{inputs.a}}"} // c depends on b only
		}, "flow.tasks[2].cache.key", `"a" is not a task this task depends on`},
		{"NegativeCacheExpiration", func(d *domain.DeploymentSpec) {
			task(d, 0).Cache = &domain.CachePolicy{Key: "inputs", ExpirationSeconds: -1}
		}, "flow.tasks[0].cache.expiration_seconds", "0 (never) or a positive number"},

		{"BadEnvName", func(d *domain.DeploymentSpec) { task(d, 0).Env = map[string]string{"1X": "v"} }, "flow.tasks[0].env.1X", "not a valid environment variable name"},
		{"ReservedEnvName", func(d *domain.DeploymentSpec) { task(d, 0).Env = map[string]string{"ORDO_RUN_ID": "x"} }, "flow.tasks[0].env.ORDO_RUN_ID", "reserved"},
		{"BadInheritEnvName", func(d *domain.DeploymentSpec) { task(d, 0).InheritEnv = []string{"HOME", "A-B"} }, "flow.tasks[0].inherit_env[1]", "not a valid environment variable name"},
		{"ReservedInheritEnv", func(d *domain.DeploymentSpec) { task(d, 0).InheritEnv = []string{"ORDO_DATABASE_URL"} }, "flow.tasks[0].inherit_env[0]", "reserved"},

		{"InvalidParametersSchema", func(d *domain.DeploymentSpec) { d.ParametersSchema = json.RawMessage(`{"type": 5}`) }, "parameters_schema.type", "not a valid JSON Schema"},
		{"ParametersSchemaNotJSON", func(d *domain.DeploymentSpec) { d.ParametersSchema = json.RawMessage(`{type: object}`) }, "parameters_schema", "invalid JSON"},
		{"ParametersSchemaExternalRef", func(d *domain.DeploymentSpec) {
			d.ParametersSchema = json.RawMessage(`{"$ref": "https://example.com/schema.json"}`)
		}, "parameters_schema", "only references inside the schema"},
		{"DefaultsViolateSchema", func(d *domain.DeploymentSpec) {
			d.ParametersSchema, d.Parameters["test_size"] = json.RawMessage(paramsSchema), 2
		}, "parameters.test_size", "maximum"},
		{"ScheduledDefaultsMissRequired", func(d *domain.DeploymentSpec) {
			d.ParametersSchema, d.Schedule = json.RawMessage(paramsSchema), &domain.Schedule{IntervalSeconds: 60}
			delete(d.Parameters, "table")
		}, "parameters.table", "required"},
		{"UnscheduledDefaultsStillChecked", func(d *domain.DeploymentSpec) {
			d.ParametersSchema, d.Parameters["test_size"] = json.RawMessage(paramsSchema), 2
			delete(d.Parameters, "table")
		}, "parameters.test_size", "maximum"},

		{"IntervalAndCron", func(d *domain.DeploymentSpec) { d.Schedule = &domain.Schedule{IntervalSeconds: 60, Cron: "* * * * *"} }, "schedule", "not both"},
		{"EmptySchedule", func(d *domain.DeploymentSpec) { d.Schedule = &domain.Schedule{} }, "schedule", "set interval_seconds or cron"},
		{"InvalidCron", func(d *domain.DeploymentSpec) { d.Schedule = &domain.Schedule{Cron: "*/5 * * *"} }, "schedule.cron", "invalid cron expression"},
		{"UnknownTimezone", func(d *domain.DeploymentSpec) {
			d.Schedule = &domain.Schedule{Cron: "0 * * * *", Timezone: "Mars/Olympus"}
		}, "schedule.timezone", `unknown time zone "Mars/Olympus"`},
		{"NegativeInterval", func(d *domain.DeploymentSpec) { d.Schedule = &domain.Schedule{IntervalSeconds: -5} }, "schedule.interval_seconds", "between 1 and"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := validDeployment()
			tt.mutate(&d)
			requireProblem(t, d.Validate(), tt.field, tt.msg)
		})
	}
}

func TestDeploymentValidateAccepts(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name   string
		mutate func(d *domain.DeploymentSpec)
	}{
		{"Minimal", func(d *domain.DeploymentSpec) {}},
		{"Defaults", func(d *domain.DeploymentSpec) { d.ApplyDefaults() }},
		{"AllPolicies", func(d *domain.DeploymentSpec) {
			d.ConcurrencyLimit, d.ConcurrencyPolicy, d.CatchUp, d.Paused = 3, "cancel_new", "none", true
		}},
		{"TagCharacters", func(d *domain.DeploymentSpec) { d.Tags = []string{"env:prod", "team/ml", "tier=1", "v1.2_x-y"} }},
		{"NameOf100Characters", func(d *domain.DeploymentSpec) { d.Name = strings.Repeat("x", 100) }},
		{"RetryOptions", func(d *domain.DeploymentSpec) {
			t := &d.Flow.Tasks[0]
			t.Retries, t.RetryDelaySeconds, t.RetryBackoff, t.RetryJitterFactor, t.TimeoutSeconds = 100, domain.RetryDelays{0}, "exponential", 1, 604800
		}},
		{"CacheTemplate", func(d *domain.DeploymentSpec) {
			d.Flow.Tasks[2].Cache = &domain.CachePolicy{Key: "{{ parameters.table }}-{{inputs.b}}", ExpirationSeconds: 60}
		}},
		{"CacheNone", func(d *domain.DeploymentSpec) { d.Flow.Tasks[0].Cache = &domain.CachePolicy{Key: "none"} }},
		// runs started by hand give it; CheckParameters refuses one that does not
		{"UnscheduledRequiredWithoutDefault", func(d *domain.DeploymentSpec) {
			d.ParametersSchema = json.RawMessage(paramsSchema)
			delete(d.Parameters, "table")
		}},
		{"Env", func(d *domain.DeploymentSpec) {
			d.Flow.Tasks[0].Env = map[string]string{"_X": "1", "PYTHONPATH": "."}
			d.Flow.Tasks[0].InheritEnv = []string{"PGPASSWORD"}
		}},
		{"ParametersSchema", func(d *domain.DeploymentSpec) { d.ParametersSchema = json.RawMessage(paramsSchema) }},
		{"CronSchedule", func(d *domain.DeploymentSpec) {
			d.Schedule = &domain.Schedule{Cron: "@hourly", Timezone: "Asia/Kolkata"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := validDeployment()
			tt.mutate(&d)
			if err := d.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestValidateCollectsAllProblems(t *testing.T) {
	t.Parallel()

	d := validDeployment()
	d.Name = ""
	d.Flow.Tasks[0].Retries = -1
	d.Flow.Tasks[1].DependsOn = []string{"zz"}
	d.Schedule = &domain.Schedule{Cron: "nope"}
	err := d.Validate()
	for _, field := range []string{"name", "flow.tasks[0].retries", "flow.tasks[1].depends_on[0]", "schedule.cron"} {
		requireProblem(t, err, field, "")
	}
}

func TestFlowValidate(t *testing.T) {
	t.Parallel()

	f := validDeployment().Flow
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	f.Tasks[1].DependsOn = []string{"c"}
	requireProblem(t, f.Validate(), "tasks[1].depends_on[0]", "cycle: b -> c -> b")
}

func TestCheckParameters(t *testing.T) {
	t.Parallel()

	d := validDeployment()
	d.ParametersSchema = json.RawMessage(paramsSchema)
	tests := []struct {
		name       string
		params     map[string]any
		field, msg string // "" means valid
	}{
		{"Valid", map[string]any{"table": "t", "test_size": 0.5, "columns": []any{"a"}}, "", ""},
		{"OutOfRange", map[string]any{"table": "t", "test_size": 0}, "parameters.test_size", "exclusiveMinimum"},
		{"WrongType", map[string]any{"table": 3}, "parameters.table", "want string"},
		{"Missing", map[string]any{}, "parameters.table", "required"},
		{"InList", map[string]any{"table": "t", "columns": []any{"a", 2}}, "parameters.columns[1]", "want string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := d.CheckParameters(tt.params)
			if tt.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			requireProblem(t, err, tt.field, tt.msg)
		})
	}

	t.Run("NoSchema", func(t *testing.T) {
		t.Parallel()
		if err := validDeployment().CheckParameters(map[string]any{"anything": true}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestMergeParameters(t *testing.T) {
	t.Parallel()

	defaults := map[string]any{"table": "houses", "opts": map[string]any{"a": 1}}
	overrides := map[string]any{"table": "flats", "n": 3}
	got := domain.MergeParameters(defaults, overrides)
	want := map[string]any{"table": "flats", "opts": map[string]any{"a": 1}, "n": 3}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if defaults["table"] != "houses" || len(defaults) != 2 {
		t.Fatalf("defaults changed: %v", defaults)
	}
	if m := domain.MergeParameters(nil, nil); m == nil || len(m) != 0 {
		t.Fatalf("MergeParameters(nil, nil) = %#v, want an empty map", m)
	}
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name          string
		task          domain.TaskSpec
		failedAttempt int
		random        float64
		want          time.Duration
	}{
		{"NoDelay", domain.TaskSpec{}, 1, 0.5, 0},
		{"Fixed", domain.TaskSpec{RetryDelaySeconds: domain.RetryDelays{5}}, 3, 0, 5 * time.Second},
		{"ListFirst", domain.TaskSpec{RetryDelaySeconds: domain.RetryDelays{1, 5, 30}}, 1, 0, time.Second},
		{"ListSecond", domain.TaskSpec{RetryDelaySeconds: domain.RetryDelays{1, 5, 30}}, 2, 0, 5 * time.Second},
		{"ListPastEnd", domain.TaskSpec{RetryDelaySeconds: domain.RetryDelays{1, 5, 30}}, 7, 0, 30 * time.Second},
		{"AttemptZeroIsFirst", domain.TaskSpec{RetryDelaySeconds: domain.RetryDelays{1, 5}}, 0, 0, time.Second},
		{"Fraction", domain.TaskSpec{RetryDelaySeconds: domain.RetryDelays{0.25}}, 1, 0, 250 * time.Millisecond},
		{"ExponentialFirst", domain.TaskSpec{RetryDelaySeconds: domain.RetryDelays{2}, RetryBackoff: "exponential"}, 1, 0, 2 * time.Second},
		{"ExponentialFourth", domain.TaskSpec{RetryDelaySeconds: domain.RetryDelays{2}, RetryBackoff: "exponential"}, 4, 0, 16 * time.Second},
		{"ExponentialCapped", domain.TaskSpec{RetryDelaySeconds: domain.RetryDelays{60}, RetryBackoff: "exponential"}, 20, 0, 24 * time.Hour},
		{"ExponentialHugeAttempt", domain.TaskSpec{RetryDelaySeconds: domain.RetryDelays{1}, RetryBackoff: "exponential"}, 1 << 30, 0, 24 * time.Hour},
		{"Jitter", domain.TaskSpec{RetryDelaySeconds: domain.RetryDelays{10}, RetryJitterFactor: 0.5}, 1, 0.5, 12500 * time.Millisecond},
		{"JitterNoRandom", domain.TaskSpec{RetryDelaySeconds: domain.RetryDelays{10}, RetryJitterFactor: 0.5}, 1, 0, 10 * time.Second},
		{"JitterOnBackoff", domain.TaskSpec{RetryDelaySeconds: domain.RetryDelays{1}, RetryBackoff: "exponential", RetryJitterFactor: 1}, 3, 0.25, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.task.RetryDelay(tt.failedAttempt, tt.random); got != tt.want {
				t.Fatalf("RetryDelay(%d, %v) = %v, want %v", tt.failedAttempt, tt.random, got, tt.want)
			}
		})
	}
}

func TestTaskKind(t *testing.T) {
	t.Parallel()

	for _, tt := range []struct {
		task domain.TaskSpec
		want string
	}{
		{domain.TaskSpec{Command: []string{"x"}}, "command"},
		{domain.TaskSpec{Handler: "h"}, "handler"},
		{domain.TaskSpec{Deployment: "d"}, "deployment"},
		{domain.TaskSpec{}, ""},
	} {
		if got := tt.task.Kind(); got != tt.want {
			t.Errorf("Kind(%+v) = %q, want %q", tt.task, got, tt.want)
		}
	}
}

func TestCacheKey(t *testing.T) {
	t.Parallel()

	inputsTask := domain.TaskSpec{Name: "train", Command: []string{"python3", "train.py"}, Env: map[string]string{"A": "1", "B": "2"},
		Cache: &domain.CachePolicy{Key: "inputs"}}

	t.Run("NotCached", func(t *testing.T) {
		t.Parallel()
		for _, c := range []*domain.CachePolicy{nil, {Key: "none"}} {
			if key, ok := domain.CacheKey(domain.TaskSpec{Name: "t", Cache: c}, nil, nil); ok || key != "" {
				t.Errorf("cache %+v: key %q, ok %v", c, key, ok)
			}
		}
	})

	t.Run("InputsDeterministic", func(t *testing.T) {
		t.Parallel()
		params1 := map[string]any{}
		params2 := map[string]any{}
		for i := range 50 {
			params1[fmt.Sprint("p", i)] = map[string]any{"x": i, "y": []any{i, "s"}}
			params2[fmt.Sprint("p", 49-i)] = map[string]any{"y": []any{49 - i, "s"}, "x": 49 - i}
		}
		inputs1 := map[string]json.RawMessage{"load": json.RawMessage(`{"rows": 10, "path": "/tmp/x"}`), "prep": json.RawMessage(`[1,2]`)}
		inputs2 := map[string]json.RawMessage{"prep": json.RawMessage(`[1, 2]`), "load": json.RawMessage(`{"path":"/tmp/x","rows":10}`)}
		key1, ok1 := domain.CacheKey(inputsTask, params1, inputs1)
		key2, ok2 := domain.CacheKey(inputsTask, params2, inputs2)
		if !ok1 || !ok2 || key1 != key2 {
			t.Fatalf("keys differ: %q %v, %q %v", key1, ok1, key2, ok2)
		}
		if len(key1) != 64 || strings.Trim(key1, "0123456789abcdef") != "" {
			t.Fatalf("key %q is not a hex SHA-256", key1)
		}
		for i := range 20 { // map iteration order changes from call to call
			if k, _ := domain.CacheKey(inputsTask, params1, inputs1); k != key1 {
				t.Fatalf("call %d: key %q, want %q", i, k, key1)
			}
		}
	})

	t.Run("InputsChangeTheKey", func(t *testing.T) {
		t.Parallel()
		params := map[string]any{"table": "houses"}
		inputs := map[string]json.RawMessage{"load": json.RawMessage(`{"rows":10}`)}
		base, _ := domain.CacheKey(inputsTask, params, inputs)
		otherCommand := inputsTask
		otherCommand.Command = []string{"python3", "train2.py"}
		otherEnv := inputsTask
		otherEnv.Env = map[string]string{"A": "1"}
		otherName := inputsTask
		otherName.Name = "train2"
		for name, key := range map[string]func() (string, bool){
			"Parameters": func() (string, bool) { return domain.CacheKey(inputsTask, map[string]any{"table": "flats"}, inputs) },
			"Inputs": func() (string, bool) {
				return domain.CacheKey(inputsTask, params, map[string]json.RawMessage{"load": json.RawMessage(`{"rows":11}`)})
			},
			"Command": func() (string, bool) { return domain.CacheKey(otherCommand, params, inputs) },
			"Env":     func() (string, bool) { return domain.CacheKey(otherEnv, params, inputs) },
			"Name":    func() (string, bool) { return domain.CacheKey(otherName, params, inputs) },
		} {
			if k, _ := key(); k == base {
				t.Errorf("changing %s kept the key %q", name, k)
			}
		}
	})

	t.Run("Template", func(t *testing.T) {
		t.Parallel()
		task := domain.TaskSpec{Name: "prep", Cache: &domain.CachePolicy{Key: "{{parameters.table}}-{{ inputs.load_data }}/{{parameters.size}}/{{parameters.missing}}"}}
		params := map[string]any{"table": "houses", "size": 0.2}
		inputs := map[string]json.RawMessage{"load_data": json.RawMessage(`{"rows": 10, "path": "a<b"}`)}
		key, ok := domain.CacheKey(task, params, inputs)
		if want := `prep:houses-{"path":"a<b","rows":10}/0.2/null`; !ok || key != want {
			t.Fatalf("key %q, %v; want %q", key, ok, want)
		}
	})

	t.Run("TemplateStringInput", func(t *testing.T) {
		t.Parallel()
		task := domain.TaskSpec{Name: "t", Cache: &domain.CachePolicy{Key: "v1-{{inputs.a}}"}}
		key, _ := domain.CacheKey(task, nil, map[string]json.RawMessage{"a": json.RawMessage(`"s3://bucket/x"`)})
		if key != "t:v1-s3://bucket/x" {
			t.Fatalf("key %q", key)
		}
	})

	t.Run("TemplateLongIsHashed", func(t *testing.T) {
		t.Parallel()
		task := domain.TaskSpec{Name: "t", Cache: &domain.CachePolicy{Key: "{{parameters.text}}"}}
		key1, _ := domain.CacheKey(task, map[string]any{"text": strings.Repeat("a", 500)}, nil)
		key2, _ := domain.CacheKey(task, map[string]any{"text": strings.Repeat("a", 499) + "b"}, nil)
		if len(key1) != len("t:")+64 || !strings.HasPrefix(key1, "t:") || key1 == key2 {
			t.Fatalf("keys %q, %q", key1, key2)
		}
	})
}

// diamond returns a -> (b, c) -> d, with tasks listed in the given order.
func diamond(order ...string) domain.FlowSpec {
	deps := map[string][]string{"b": {"a"}, "c": {"a"}, "d": {"b", "c"}}
	f := domain.FlowSpec{Name: "diamond"}
	for _, name := range order {
		f.Tasks = append(f.Tasks, domain.TaskSpec{Name: name, Handler: "h", DependsOn: deps[name]})
	}
	return f
}

func TestFlowGraph(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name       string
		flow       domain.FlowSpec
		roots      []string
		downstream map[string][]string
		topo       []string
	}{
		{"SpecOrder", diamond("a", "b", "c", "d"), []string{"a"},
			map[string][]string{"a": {"b", "c"}, "b": {"d"}, "c": {"d"}}, []string{"a", "b", "c", "d"}},
		{"ReverseOrder", diamond("d", "c", "b", "a"), []string{"a"},
			map[string][]string{"a": {"c", "b"}, "b": {"d"}, "c": {"d"}}, []string{"a", "c", "b", "d"}},
		{"TwoRoots", domain.FlowSpec{Name: "f", Tasks: []domain.TaskSpec{
			{Name: "x", Handler: "h", DependsOn: []string{"y"}}, {Name: "y", Handler: "h"}, {Name: "z", Handler: "h"},
		}}, []string{"y", "z"}, map[string][]string{"y": {"x"}}, []string{"y", "z", "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.flow.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := tt.flow.Roots(); !reflect.DeepEqual(got, tt.roots) {
				t.Errorf("Roots = %v, want %v", got, tt.roots)
			}
			if got := tt.flow.Downstream(); !reflect.DeepEqual(got, tt.downstream) {
				t.Errorf("Downstream = %v, want %v", got, tt.downstream)
			}
			if got := tt.flow.TopoOrder(); !reflect.DeepEqual(got, tt.topo) {
				t.Errorf("TopoOrder = %v, want %v", got, tt.topo)
			}
		})
	}

	t.Run("Task", func(t *testing.T) {
		t.Parallel()
		f := diamond("a", "b", "c", "d")
		if task, ok := f.Task("c"); !ok || task.Name != "c" || task.DependsOn[0] != "a" {
			t.Fatalf("Task(c) = %+v, %v", task, ok)
		}
		if _, ok := f.Task("zz"); ok {
			t.Fatal("Task(zz) found")
		}
	})

	t.Run("TopoOrderLeavesOutCycles", func(t *testing.T) {
		t.Parallel()
		f := diamond("a", "b", "c", "d")
		f.Tasks[1].DependsOn = []string{"a", "d"}
		if got := f.TopoOrder(); !reflect.DeepEqual(got, []string{"a", "c"}) {
			t.Fatalf("TopoOrder = %v", got)
		}
	})
}

func TestTopoOrderLargeChain(t *testing.T) {
	t.Parallel()

	f := domain.FlowSpec{Name: "chain"}
	for i := range domain.MaxTasksPerFlow {
		task := domain.TaskSpec{Name: fmt.Sprint("t", i), Handler: "h"}
		if i > 0 {
			task.DependsOn = []string{fmt.Sprint("t", i-1)}
		}
		f.Tasks = append(f.Tasks, task)
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	f.Tasks[0].DependsOn = []string{fmt.Sprint("t", domain.MaxTasksPerFlow-1)}
	requireProblem(t, f.Validate(), "tasks[0].depends_on[0]", "cycle: t0 -> t1 -> t2")
	if order := f.TopoOrder(); len(order) != 0 {
		t.Fatalf("TopoOrder of a full cycle has %d tasks", len(order))
	}
}

func TestParseDeploymentYAMLAliasBomb(t *testing.T) {
	t.Parallel()

	var b strings.Builder
	b.WriteString("name: d\nx0: &x0 [a, a, a, a, a, a, a, a, a, a]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "x%d: &x%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*x%d, ", i-1), 10), ", "))
	}
	start := time.Now()
	_, err := domain.ParseDeploymentYAML([]byte(b.String()))
	if domain.ErrorCode(err) != domain.CodeInvalid || !strings.Contains(err.Error(), "aliases are expanded") {
		t.Fatalf("error = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}

	// Aliases within the bound work as usual.
	d, err := domain.ParseDeploymentYAML([]byte("name: d\nflow:\n  name: f\n  tasks:\n    - {name: a, command: &cmd [python3, x.py], env: &env {A: '1'}}\n    - {name: b, command: *cmd, env: *env}\n"))
	if err != nil || !reflect.DeepEqual(d.Flow.Tasks[1].Command, []string{"python3", "x.py"}) || d.Flow.Tasks[1].Env["A"] != "1" {
		t.Fatalf("aliases: %+v, %v", d.Flow.Tasks, err)
	}
}
