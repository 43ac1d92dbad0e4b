package domain

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"time"
)

// Limits and fixed values of specs.
const (
	MaxTasksPerFlow      = 20000  // tasks in one flow
	MaxTags              = 50     // tags on a deployment or a task
	MaxRetries           = 100    // retries of one task
	MaxRetryDelays       = 100    // entries in a retry_delay_seconds list
	MaxRetryDelaySeconds = 86400  // one retry delay, and the cap of exponential backoff
	MaxTimeoutSeconds    = 604800 // a task's timeout (7 days)

	DefaultWorkQueue = "default"

	TaskKindCommand    = "command"    // TaskSpec.Command: a child process of the worker
	TaskKindHandler    = "handler"    // TaskSpec.Handler: a Go function registered in the worker
	TaskKindDeployment = "deployment" // TaskSpec.Deployment: a sub-flow run of another deployment

	RetryBackoffExponential = "exponential"

	CacheKeyInputs = "inputs" // hash of the task definition, parameters and inputs
	CacheKeyNone   = "none"   // no caching

	ConcurrencyEnqueue   = "enqueue"    // a run over the limit waits
	ConcurrencyCancelNew = "cancel_new" // a run over the limit is cancelled

	CatchUpAll    = "all"    // start every run missed while nothing was up
	CatchUpLatest = "latest" // start only the latest missed run
	CatchUpNone   = "none"   // start none of them
)

// DeploymentSpec is what users deploy: a flow with default parameters, an
// optional schedule, the work queue its runs go to, and run policies.
type DeploymentSpec struct {
	Name             string          `json:"name"`
	Description      string          `json:"description,omitempty"`
	WorkQueue        string          `json:"work_queue,omitempty"`
	Tags             []string        `json:"tags,omitempty"`
	Parameters       map[string]any  `json:"parameters,omitempty"`
	ParametersSchema json.RawMessage `json:"parameters_schema,omitempty"` // a JSON Schema the run parameters must satisfy
	Schedule         *Schedule       `json:"schedule,omitempty"`
	Flow             FlowSpec        `json:"flow"`

	ConcurrencyLimit  int    `json:"concurrency_limit,omitempty"`  // at most this many active runs; 0 means unlimited
	ConcurrencyPolicy string `json:"concurrency_policy,omitempty"` // ConcurrencyEnqueue (default) or ConcurrencyCancelNew
	CatchUp           string `json:"catch_up,omitempty"`           // CatchUpAll, CatchUpLatest (default) or CatchUpNone
	Paused            bool   `json:"paused,omitempty"`

	Notifications []DeploymentNotification `json:"notifications,omitempty"` // automations owned by the deployment
}

// FlowSpec is a DAG of tasks.
type FlowSpec struct {
	Name  string     `json:"name"`
	Tasks []TaskSpec `json:"tasks"`
}

// TaskSpec is one task of a flow. Exactly one of Command, Handler and
// Deployment says what it runs.
type TaskSpec struct {
	Name       string         `json:"name"`
	Command    []string       `json:"command,omitempty"`    // a command task: argv
	Handler    string         `json:"handler,omitempty"`    // a Go handler registered by name in a worker binary
	Deployment string         `json:"deployment,omitempty"` // a sub-flow: starts a run of the named deployment
	Parameters map[string]any `json:"parameters,omitempty"` // sub-flows: the child run's parameters; others: static parameters merged into the run's
	DependsOn  []string       `json:"depends_on,omitempty"`

	Retries           int          `json:"retries,omitempty"`
	RetryDelaySeconds RetryDelays  `json:"retry_delay_seconds,omitempty"` // a number or a list of numbers
	RetryBackoff      string       `json:"retry_backoff,omitempty"`       // "" (none) or RetryBackoffExponential
	RetryJitterFactor float64      `json:"retry_jitter_factor,omitempty"` // 0..1: a delay d becomes up to d*(1+factor)
	TimeoutSeconds    float64      `json:"timeout_seconds,omitempty"`     // 0 means none
	Cache             *CachePolicy `json:"cache,omitempty"`
	Tags              []string     `json:"tags,omitempty"`

	Env        map[string]string `json:"env,omitempty"`         // variables set for the task process
	InheritEnv []string          `json:"inherit_env,omitempty"` // worker variables passed through; their values are never stored
	WorkQueue  string            `json:"work_queue,omitempty"`  // overrides the deployment's queue for this task
}

// RetryDelays are the delays in seconds before retries. In JSON it is a
// number or a list of numbers.
type RetryDelays []float64

// UnmarshalJSON accepts a number or a list of numbers.
func (r *RetryDelays) UnmarshalJSON(b []byte) error {
	var one float64
	if err := json.Unmarshal(b, &one); err == nil {
		if !bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
			*r = RetryDelays{one}
		}
		return nil
	}
	var list []float64
	if err := json.Unmarshal(b, &list); err != nil {
		return errors.New("retry delays must be a number or a list of numbers")
	}
	*r = list
	return nil
}

// MarshalJSON writes a single delay as a number and others as a list.
func (r RetryDelays) MarshalJSON() ([]byte, error) {
	if len(r) == 1 {
		return json.Marshal(r[0])
	}
	return json.Marshal([]float64(r))
}

// CachePolicy says when a task may reuse the result of an earlier run.
//
// Key is CacheKeyInputs, CacheKeyNone, or a template such as
// "{{parameters.table}}-{{inputs.load_data}}" whose placeholders name a run
// parameter or the result of a task this task depends on.
type CachePolicy struct {
	Key               string  `json:"key"`
	ExpirationSeconds float64 `json:"expiration_seconds,omitempty"` // 0 means never
	Refresh           bool    `json:"refresh,omitempty"`            // run anyway and store the new result
}

// ApplyDefaults fills in the work queue, concurrency policy and catch-up
// policy when they are empty.
func (d *DeploymentSpec) ApplyDefaults() {
	if d.WorkQueue == "" {
		d.WorkQueue = DefaultWorkQueue
	}
	if d.ConcurrencyPolicy == "" {
		d.ConcurrencyPolicy = ConcurrencyEnqueue
	}
	if d.CatchUp == "" {
		d.CatchUp = CatchUpLatest
	}
}

// Kind returns TaskKindCommand, TaskKindHandler or TaskKindDeployment, or ""
// for a task that sets none of them.
func (t TaskSpec) Kind() string {
	switch {
	case t.Command != nil:
		return TaskKindCommand
	case t.Handler != "":
		return TaskKindHandler
	case t.Deployment != "":
		return TaskKindDeployment
	}
	return ""
}

// RetryDelay returns how long to wait before retrying after the given failed
// attempt (1 for the first failure). With a list of delays, attempt n waits
// the n-th delay, and the last one from then on; with a single delay and
// exponential backoff, it waits delay*2^(n-1), at most one day. Jitter then
// stretches the delay d to d*(1+factor*random), random being in [0, 1).
func (t TaskSpec) RetryDelay(failedAttempt int, random float64) time.Duration {
	delays := t.RetryDelaySeconds
	if len(delays) == 0 {
		return 0
	}
	failedAttempt = max(failedAttempt, 1)
	var s float64
	if len(delays) == 1 && t.RetryBackoff == RetryBackoffExponential {
		s = min(delays[0]*math.Pow(2, float64(min(failedAttempt-1, 64))), MaxRetryDelaySeconds)
	} else {
		s = delays[min(failedAttempt, len(delays))-1]
	}
	s *= 1 + t.RetryJitterFactor*min(max(random, 0), 1)
	if !(s > 0) || math.IsInf(s, 0) {
		return 0
	}
	return time.Duration(s * float64(time.Second))
}

// MergeParameters returns a new map with the defaults overridden by the
// overrides, key by key (not deeply).
func MergeParameters(defaults, overrides map[string]any) map[string]any {
	m := make(map[string]any, len(defaults)+len(overrides))
	maps.Copy(m, defaults)
	maps.Copy(m, overrides)
	return m
}
