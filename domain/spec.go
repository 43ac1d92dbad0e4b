package domain

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
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

// maxCacheKeyText is the longest rendered cache key template kept as is;
// longer ones are replaced by their SHA-256.
const maxCacheKeyText = 128

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

// ParseDeployment parses a JSON deployment body strictly: unknown fields,
// values of the wrong type and data after the object are errors naming the
// field. It then applies defaults and validates. Every error is an *Error with
// CodeInvalid.
func ParseDeployment(data []byte) (DeploymentSpec, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return DeploymentSpec{}, jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return DeploymentSpec{}, Errorf(CodeInvalid, "invalid JSON: data after the deployment object")
	}
	if _, ok := doc.(map[string]any); !ok {
		return DeploymentSpec{}, Errorf(CodeInvalid, "invalid deployment: the document must be an object")
	}
	p := &Problems{Message: "invalid deployment"}
	checkShape(p, "", doc, reflect.TypeFor[DeploymentSpec]())
	if err := p.Err(); err != nil {
		return DeploymentSpec{}, err
	}
	var d DeploymentSpec
	if err := json.Unmarshal(data, &d); err != nil {
		return DeploymentSpec{}, Errorf(CodeInvalid, "invalid deployment: %v", err)
	}
	if hasSchema(d.ParametersSchema) {
		var b bytes.Buffer
		_ = json.Compact(&b, d.ParametersSchema) // valid: it was decoded above
		d.ParametersSchema = b.Bytes()
	} else {
		d.ParametersSchema = nil
	}
	d.ApplyDefaults()
	if err := d.Validate(); err != nil {
		return DeploymentSpec{}, err
	}
	return d, nil
}

// ParseDeploymentYAML parses a YAML deployment file: the same document as the
// JSON body, checked the same way.
func ParseDeploymentYAML(data []byte) (DeploymentSpec, error) {
	// yaml.YAMLToJSON, with a bound on what aliases expand to.
	var doc any
	if err := yaml.UnmarshalWithOptions(data, &doc, yaml.UseOrderedMap()); err != nil {
		return DeploymentSpec{}, Errorf(CodeInvalid, "invalid YAML: %s", yaml.FormatError(err, false, false))
	}
	budget := maxYAMLValues
	if !countValues(doc, &budget) {
		return DeploymentSpec{}, Errorf(CodeInvalid, "invalid YAML: more than %d values once aliases are expanded", maxYAMLValues)
	}
	js, err := yaml.MarshalWithOptions(doc, yaml.JSON())
	if err != nil {
		return DeploymentSpec{}, Errorf(CodeInvalid, "invalid YAML: %v", err)
	}
	return ParseDeployment(js)
}

// maxYAMLValues bounds the size of a YAML document with its aliases
// expanded, so that a few lines of nested aliases ("billion laughs") cannot
// take minutes and gigabytes. A flow of MaxTasksPerFlow tasks fits.
const maxYAMLValues = 1 << 21

// countValues takes the values in v from budget and reports whether it
// lasted. Decoded aliases share their values, so this stops early rather
// than walk an exponential tree.
func countValues(v any, budget *int) bool {
	if *budget--; *budget < 0 {
		return false
	}
	switch v := v.(type) {
	case yaml.MapSlice:
		for _, item := range v {
			if !countValues(item.Key, budget) || !countValues(item.Value, budget) {
				return false
			}
		}
	case []any:
		for _, e := range v {
			if !countValues(e, budget) {
				return false
			}
		}
	}
	return true
}

// ParseDeploymentAuto parses JSON when the first non-space byte is '{', and
// YAML otherwise.
func ParseDeploymentAuto(data []byte) (DeploymentSpec, error) {
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		return ParseDeployment(data)
	}
	return ParseDeploymentYAML(data)
}

func jsonError(err error) *Error {
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &syn):
		return Errorf(CodeInvalid, "invalid JSON at byte %d: %v", syn.Offset, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return Errorf(CodeInvalid, "invalid JSON: unexpected end of input")
	}
	return Errorf(CodeInvalid, "invalid JSON: %v", err)
}

var (
	rawMessageType  = reflect.TypeFor[json.RawMessage]()
	retryDelaysType = reflect.TypeFor[RetryDelays]()
	timeType        = reflect.TypeFor[time.Time]()
	float64Type     = reflect.TypeFor[float64]()
)

// checkShape reports, each at its path, every part of doc (decoded with
// UseNumber) that does not fit t: unknown fields, wrong JSON types, numbers
// out of range. A null leaves the default, as in encoding/json.
func checkShape(p *Problems, path string, doc any, t reflect.Type) {
	if doc == nil {
		return
	}
	switch t {
	case rawMessageType:
		return
	case timeType:
		var tm time.Time
		if s, ok := doc.(string); !ok || tm.UnmarshalText([]byte(s)) != nil {
			p.Add(path, "must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
		}
		return
	case retryDelaysType:
		if list, ok := doc.([]any); ok {
			for i, v := range list {
				checkShape(p, fmt.Sprintf("%s[%d]", path, i), v, float64Type)
			}
			return
		}
		checkShape(p, path, doc, float64Type)
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		checkShape(p, path, doc, t.Elem())
	case reflect.String:
		if _, ok := doc.(string); !ok {
			p.Add(path, "must be a string")
		}
	case reflect.Bool:
		if _, ok := doc.(bool); !ok {
			p.Add(path, "must be true or false")
		}
	case reflect.Int:
		if n, ok := doc.(json.Number); !ok {
			p.Add(path, "must be an integer")
		} else if _, err := strconv.ParseInt(string(n), 10, strconv.IntSize); err != nil {
			p.Add(path, "must be an integer, got %s", n)
		}
	case reflect.Float64:
		if n, ok := doc.(json.Number); !ok {
			p.Add(path, "must be a number")
		} else if _, err := n.Float64(); err != nil {
			p.Add(path, "number out of range: %s", n)
		}
	case reflect.Slice:
		list, ok := doc.([]any)
		if !ok {
			p.Add(path, "must be a list")
			return
		}
		for i, v := range list {
			checkShape(p, fmt.Sprintf("%s[%d]", path, i), v, t.Elem())
		}
	case reflect.Map:
		obj, ok := doc.(map[string]any)
		if !ok {
			p.Add(path, "must be an object")
			return
		}
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			checkShape(p, path+"."+k, obj[k], t.Elem())
		}
	case reflect.Struct:
		obj, ok := doc.(map[string]any)
		if !ok {
			p.Add(path, "must be an object")
			return
		}
		fields := jsonFields(t)
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			sub := k
			if path != "" {
				sub = path + "." + k
			}
			if ft, known := fields[k]; known {
				checkShape(p, sub, obj[k], ft)
			} else {
				p.Add(sub, "unknown field")
			}
		}
	}
}

var structFields sync.Map // reflect.Type -> map[string]reflect.Type

// jsonFields maps the JSON names of a struct's fields to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	if fields, ok := structFields.Load(t); ok {
		return fields.(map[string]reflect.Type)
	}
	fields := make(map[string]reflect.Type, t.NumField())
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	structFields.Store(t, fields)
	return fields
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

var (
	nameRe    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)
	tagRe     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:/=-]{0,99}$`)
	envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// ValidName reports whether s can name a deployment, flow, task, handler or
// work queue: 1 to 100 letters, digits, '_', '.' or '-', starting with a
// letter or digit.
func ValidName(s string) bool { return nameRe.MatchString(s) }

// ValidTag reports whether s can be a tag: 1 to 100 letters, digits or
// '_.-:/=', starting with a letter or digit.
func ValidTag(s string) bool { return tagRe.MatchString(s) }

// Validate checks the whole deployment and returns every problem found as
// one *Error with CodeInvalid whose details name the fields. Empty policies
// and work queue are valid: they mean the defaults.
func (d *DeploymentSpec) Validate() error {
	p := &Problems{Message: "invalid deployment"}
	checkName(p, "name", d.Name)
	if d.WorkQueue != "" {
		checkName(p, "work_queue", d.WorkQueue)
	}
	checkTags(p, "tags", d.Tags)
	if d.ConcurrencyLimit < 0 {
		p.Add("concurrency_limit", "must be 0 (unlimited) or more, got %d", d.ConcurrencyLimit)
	}
	if !slices.Contains([]string{"", ConcurrencyEnqueue, ConcurrencyCancelNew}, d.ConcurrencyPolicy) {
		p.Add("concurrency_policy", "must be %q or %q, got %q", ConcurrencyEnqueue, ConcurrencyCancelNew, d.ConcurrencyPolicy)
	}
	if !slices.Contains([]string{"", CatchUpAll, CatchUpLatest, CatchUpNone}, d.CatchUp) {
		p.Add("catch_up", "must be %q, %q or %q, got %q", CatchUpAll, CatchUpLatest, CatchUpNone, d.CatchUp)
	}
	if d.Schedule != nil {
		d.Schedule.validate(p, "schedule")
	}
	d.Flow.validate(p, "flow.")
	for i, t := range d.Flow.Tasks {
		if t.Deployment != "" && t.Deployment == d.Name {
			p.Add(fmt.Sprintf("flow.tasks[%d].deployment", i), "a deployment cannot run itself as a sub-flow")
		}
	}
	if hasSchema(d.ParametersSchema) {
		if sch := compileParametersSchema(p, d.ParametersSchema); sch != nil {
			checkParameters(p, sch, d.Parameters)
		}
	}
	return p.Err()
}

// Validate checks the flow alone; field paths start at the flow ("tasks[0].name").
func (f FlowSpec) Validate() error {
	p := &Problems{Message: "invalid flow"}
	f.validate(p, "")
	return p.Err()
}

func (f FlowSpec) validate(p *Problems, prefix string) {
	checkName(p, prefix+"name", f.Name)
	switch n := len(f.Tasks); {
	case n == 0:
		p.Add(prefix+"tasks", "a flow needs at least one task")
		return
	case n > MaxTasksPerFlow:
		p.Add(prefix+"tasks", "at most %d tasks, got %d", MaxTasksPerFlow, n)
		return
	}
	index := make(map[string]int, len(f.Tasks))
	for i, t := range f.Tasks {
		if j, dup := index[t.Name]; dup {
			if t.Name != "" {
				p.Add(fmt.Sprintf("%stasks[%d].name", prefix, i), "duplicate task name %q (also tasks[%d])", t.Name, j)
			}
			continue
		}
		index[t.Name] = i
	}
	for i, t := range f.Tasks {
		t.validate(p, fmt.Sprintf("%stasks[%d]", prefix, i), index)
	}
	f.checkCycles(p, prefix)
}

func (t TaskSpec) validate(p *Problems, base string, index map[string]int) {
	field := func(name string) string { return base + "." + name }
	checkName(p, field("name"), t.Name)

	switch kinds := btoi(t.Command != nil) + btoi(t.Handler != "") + btoi(t.Deployment != ""); {
	case kinds == 0:
		p.Add(base, "set one of command, handler or deployment")
	case kinds > 1:
		p.Add(base, "set only one of command, handler or deployment")
	}
	switch {
	case t.Command == nil:
	case len(t.Command) == 0:
		p.Add(field("command"), "must not be empty")
	case strings.TrimSpace(t.Command[0]) == "":
		p.Add(field("command[0]"), "the program to run must not be empty")
	}
	if t.Handler != "" {
		checkName(p, field("handler"), t.Handler)
	}
	if t.Deployment != "" {
		checkName(p, field("deployment"), t.Deployment)
	}
	if t.WorkQueue != "" {
		checkName(p, field("work_queue"), t.WorkQueue)
	}

	seen := make(map[string]bool, len(t.DependsOn))
	for j, dep := range t.DependsOn {
		f := fmt.Sprintf("%s.depends_on[%d]", base, j)
		_, known := index[dep]
		switch {
		case dep == t.Name:
			p.Add(f, "task %q depends on itself", dep)
		case !known:
			p.Add(f, "unknown task %q", dep)
		case seen[dep]:
			p.Add(f, "duplicate dependency %q", dep)
		}
		seen[dep] = true
	}

	if t.Retries < 0 || t.Retries > MaxRetries {
		p.Add(field("retries"), "must be between 0 and %d, got %d", MaxRetries, t.Retries)
	}
	if n := len(t.RetryDelaySeconds); n > MaxRetryDelays {
		p.Add(field("retry_delay_seconds"), "at most %d delays, got %d", MaxRetryDelays, n)
	}
	for j, s := range t.RetryDelaySeconds {
		f := field("retry_delay_seconds")
		if len(t.RetryDelaySeconds) > 1 {
			f = fmt.Sprintf("%s[%d]", f, j)
		}
		if !(s >= 0 && s <= MaxRetryDelaySeconds) {
			p.Add(f, "a retry delay must be between 0 and %d seconds, got %v", MaxRetryDelaySeconds, s)
		}
	}
	switch t.RetryBackoff {
	case "":
	case RetryBackoffExponential:
		if len(t.RetryDelaySeconds) > 1 {
			p.Add(field("retry_backoff"), "exponential backoff takes a single retry_delay_seconds, not a list")
		}
	default:
		p.Add(field("retry_backoff"), "must be empty or %q, got %q", RetryBackoffExponential, t.RetryBackoff)
	}
	if !(t.RetryJitterFactor >= 0 && t.RetryJitterFactor <= 1) {
		p.Add(field("retry_jitter_factor"), "must be between 0 and 1, got %v", t.RetryJitterFactor)
	}
	if !(t.TimeoutSeconds >= 0 && t.TimeoutSeconds <= MaxTimeoutSeconds) {
		p.Add(field("timeout_seconds"), "must be 0 (no timeout) or at most %d seconds, got %v", MaxTimeoutSeconds, t.TimeoutSeconds)
	}
	if t.Cache != nil {
		t.validateCache(p, field("cache"))
	}
	checkTags(p, field("tags"), t.Tags)
	for _, name := range slices.Sorted(maps.Keys(t.Env)) {
		checkEnvName(p, field("env."+name), name)
		checkSecretEnv(p, field("env."+name), name, t.Env[name])
	}
	for j, name := range t.InheritEnv {
		checkEnvName(p, fmt.Sprintf("%s.inherit_env[%d]", base, j), name)
	}
}

func (t TaskSpec) validateCache(p *Problems, base string) {
	key := t.Cache.Key
	switch {
	case key == "":
		p.Add(base+".key", "required: %q, %q or a template such as \"{{parameters.table}}\"", CacheKeyInputs, CacheKeyNone)
	case key == CacheKeyInputs, key == CacheKeyNone:
	case len(key) > 1000:
		p.Add(base+".key", "a key template must be at most 1000 characters")
	default:
		segs, err := parseCacheTemplate(key)
		if err != nil {
			p.Add(base+".key", "%v", err)
			break
		}
		for _, s := range segs {
			if !s.placeholder {
				continue
			}
			src, name, _ := strings.Cut(s.text, ".")
			switch {
			case name == "" || (src != "parameters" && src != "inputs"):
				p.Add(base+".key", "unknown placeholder {{%s}}: use {{parameters.NAME}} or {{inputs.TASK}}", s.text)
			case src == "inputs" && !slices.Contains(t.DependsOn, name):
				p.Add(base+".key", "{{%s}}: %q is not a task this task depends on", s.text, name)
			}
		}
	}
	if e := t.Cache.ExpirationSeconds; !(e >= 0) || math.IsInf(e, 0) {
		p.Add(base+".expiration_seconds", "must be 0 (never) or a positive number of seconds, got %v", e)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func checkName(p *Problems, field, s string) {
	switch {
	case s == "":
		p.Add(field, "required")
	case !nameRe.MatchString(s):
		p.Add(field, "%q is not a valid name: use 1 to 100 letters, digits, '_', '.' or '-', starting with a letter or digit", s)
	}
}

func checkTags(p *Problems, field string, tags []string) {
	if len(tags) > MaxTags {
		p.Add(field, "at most %d tags, got %d", MaxTags, len(tags))
	}
	for i, tag := range tags {
		if !tagRe.MatchString(tag) {
			p.Add(fmt.Sprintf("%s[%d]", field, i), "%q is not a valid tag: use 1 to 100 letters, digits or '_.-:/=', starting with a letter or digit", tag)
		}
	}
}

func checkEnvName(p *Problems, field, name string) {
	switch {
	case !envNameRe.MatchString(name):
		p.Add(field, "%q is not a valid environment variable name", name)
	case strings.HasPrefix(name, "ORDO_"):
		p.Add(field, "%q is reserved: Ordo sets the ORDO_ variables itself", name)
	}
}

// graph returns, for each task by spec index, the indexes of the tasks that
// depend on it (in spec order) and its number of dependencies. Unknown,
// self and repeated dependencies are left out.
func (f FlowSpec) graph() (down [][]int, indegree []int) {
	index := make(map[string]int, len(f.Tasks))
	for i, t := range f.Tasks {
		if _, dup := index[t.Name]; !dup {
			index[t.Name] = i
		}
	}
	down = make([][]int, len(f.Tasks))
	indegree = make([]int, len(f.Tasks))
	for i, t := range f.Tasks {
		for j, dep := range t.DependsOn {
			up, ok := index[dep]
			if !ok || up == i || slices.Contains(t.DependsOn[:j], dep) {
				continue
			}
			down[up] = append(down[up], i)
			indegree[i]++
		}
	}
	return down, indegree
}

// checkCycles reports dependency cycles, at most maxCycles of them, each as
// "cycle: a -> b -> a" where an arrow points from a task to one that depends
// on it.
func (f FlowSpec) checkCycles(p *Problems, prefix string) {
	const maxCycles = 10
	down, _ := f.graph()
	const (
		unvisited = iota
		onStack
		done
	)
	state := make([]uint8, len(f.Tasks))
	pos := make([]int, len(f.Tasks)) // position on the stack
	var stack []int
	found := 0
	var visit func(i int)
	visit = func(i int) {
		state[i], pos[i] = onStack, len(stack)
		stack = append(stack, i)
		for _, j := range down[i] {
			if found == maxCycles {
				break
			}
			switch state[j] {
			case unvisited:
				visit(j)
			case onStack:
				found++
				cycle := slices.Clone(stack[pos[j]:])
				first := slices.Index(cycle, slices.Min(cycle))
				cycle = append(cycle[first:], cycle[:first]...)
				names := make([]string, 0, len(cycle)+1)
				for _, k := range cycle {
					names = append(names, f.Tasks[k].Name)
				}
				names = append(names, names[0])
				head, last := f.Tasks[cycle[0]], f.Tasks[cycle[len(cycle)-1]].Name
				p.Add(fmt.Sprintf("%stasks[%d].depends_on[%d]", prefix, cycle[0], slices.Index(head.DependsOn, last)),
					"cycle: %s", strings.Join(names, " -> "))
			}
		}
		stack = stack[:len(stack)-1]
		state[i] = done
	}
	for i := range f.Tasks {
		if state[i] == unvisited && found < maxCycles {
			visit(i)
		}
	}
}

// Task returns the task with the given name.
func (f FlowSpec) Task(name string) (TaskSpec, bool) {
	for _, t := range f.Tasks {
		if t.Name == name {
			return t, true
		}
	}
	return TaskSpec{}, false
}

// Roots returns the tasks that depend on no other task, in spec order.
func (f FlowSpec) Roots() []string {
	var roots []string
	for _, t := range f.Tasks {
		if len(t.DependsOn) == 0 {
			roots = append(roots, t.Name)
		}
	}
	return roots
}

// Downstream maps each task that others depend on to those tasks, in spec
// order.
func (f FlowSpec) Downstream() map[string][]string {
	down, _ := f.graph()
	m := make(map[string][]string)
	for i, ds := range down {
		for _, j := range ds {
			m[f.Tasks[i].Name] = append(m[f.Tasks[i].Name], f.Tasks[j].Name)
		}
	}
	return m
}

// TopoOrder returns the task names so that every task comes after the tasks
// it depends on; among tasks that are ready together, spec order decides.
// Tasks on a cycle (which Validate rejects) are left out.
func (f FlowSpec) TopoOrder() []string {
	down, indegree := f.graph()
	queue := make([]int, 0, len(f.Tasks))
	for i, n := range indegree {
		if n == 0 {
			queue = append(queue, i)
		}
	}
	order := make([]string, 0, len(f.Tasks))
	for k := 0; k < len(queue); k++ {
		i := queue[k]
		order = append(order, f.Tasks[i].Name)
		for _, j := range down[i] {
			if indegree[j]--; indegree[j] == 0 {
				queue = append(queue, j)
			}
		}
	}
	return order
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

// CacheKey returns the key under which the result of task t, run with these
// parameters and inputs (upstream task name -> result), is cached; ok is false
// when the task is not cached. Key "inputs" gives the hex SHA-256 of the task
// definition, parameters and inputs; a template gives the task name, ":" and
// the rendered template (its SHA-256 when longer than 128 bytes), where
// string values are inserted as is and others as compact JSON. The key does
// not depend on map order.
func CacheKey(t TaskSpec, params map[string]any, inputs map[string]json.RawMessage) (key string, ok bool) {
	if t.Cache == nil {
		return "", false
	}
	switch t.Cache.Key {
	case "", CacheKeyNone:
		return "", false
	case CacheKeyInputs:
		decoded := make(map[string]any, len(inputs))
		for name, raw := range inputs {
			decoded[name] = decodeResult(raw)
		}
		sum := sha256.Sum256(canonicalJSON(map[string]any{
			"task": map[string]any{
				"name": t.Name, "command": t.Command, "handler": t.Handler, "deployment": t.Deployment,
				"env": t.Env, "parameters": t.Parameters,
			},
			"parameters": params,
			"inputs":     decoded,
		}))
		return hex.EncodeToString(sum[:]), true
	}
	segs, err := parseCacheTemplate(t.Cache.Key)
	if err != nil {
		return "", false
	}
	var b strings.Builder
	for _, s := range segs {
		if !s.placeholder {
			b.WriteString(s.text)
			continue
		}
		var v any
		switch src, name, _ := strings.Cut(s.text, "."); src {
		case "parameters":
			v = params[name]
		case "inputs":
			v = decodeResult(inputs[name])
		}
		if str, isString := v.(string); isString {
			b.WriteString(str)
		} else {
			b.Write(canonicalJSON(v))
		}
	}
	rendered := b.String()
	if len(rendered) > maxCacheKeyText {
		sum := sha256.Sum256([]byte(rendered))
		rendered = hex.EncodeToString(sum[:])
	}
	return t.Name + ":" + rendered, true
}

// decodeResult decodes a task result for hashing or rendering, keeping
// numbers as written; a result that is not JSON is used as a string.
func decodeResult(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return string(raw)
	}
	return v
}

// canonicalJSON encodes v compactly with map keys sorted (encoding/json
// sorts them) and without HTML escaping.
func canonicalJSON(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Append(nil, v) // NaN or the like, from Go callers
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

type cacheSegment struct {
	text        string
	placeholder bool // text is what was inside {{ }}, trimmed
}

func parseCacheTemplate(s string) ([]cacheSegment, error) {
	var segs []cacheSegment
	for s != "" {
		open := strings.Index(s, "{{")
		if open < 0 {
			segs = append(segs, cacheSegment{text: s})
			break
		}
		if open > 0 {
			segs = append(segs, cacheSegment{text: s[:open]})
		}
		rest := s[open+2:]
		end := strings.Index(rest, "}}")
		if end < 0 {
			return nil, errors.New(`"{{" without a closing "}}"`)
		}
		segs = append(segs, cacheSegment{text: strings.TrimSpace(rest[:end]), placeholder: true})
		s = rest[end+2:]
	}
	return segs, nil
}

// CheckParameters checks run parameters (defaults already merged with the
// overrides) against the deployment's parameters_schema, if it has one. The
// error details name the parameters, as in "parameters.test_size".
func (d DeploymentSpec) CheckParameters(params map[string]any) error {
	if !hasSchema(d.ParametersSchema) {
		return nil
	}
	p := &Problems{Message: "invalid parameters"}
	if sch := compileParametersSchema(p, d.ParametersSchema); sch != nil {
		checkParameters(p, sch, params)
	}
	return p.Err()
}

func hasSchema(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && !bytes.Equal(t, []byte("null"))
}

var schemaPrinter = message.NewPrinter(language.English)

// noLoader refuses to load schemas from anywhere: domain reads no files and
// no network, so a parameters schema must be self-contained.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("cannot load %q: only references inside the schema (#...) are allowed", url)
}

// compileParametersSchema compiles a parameters schema, or reports why it
// cannot and returns nil.
func compileParametersSchema(p *Problems, raw json.RawMessage) *jsonschema.Schema {
	const url = "urn:ordo:parameters_schema"
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		p.Add("parameters_schema", "invalid JSON: %v", err)
		return nil
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(noLoader{})
	if err := c.AddResource(url, doc); err != nil {
		p.Add("parameters_schema", "%v", err)
		return nil
	}
	sch, err := c.Compile(url)
	var sve *jsonschema.SchemaValidationError
	var ve *jsonschema.ValidationError
	switch {
	case err == nil:
		return sch
	case errors.As(err, &sve) && errors.As(sve.Err, &ve):
		addSchemaErrors(p, "parameters_schema", ve, doc, "not a valid JSON Schema: ")
	default:
		p.Add("parameters_schema", "not a valid JSON Schema: %s", strings.ReplaceAll(err.Error(), "\n", " "))
	}
	return nil
}

func checkParameters(p *Problems, sch *jsonschema.Schema, params map[string]any) {
	if params == nil {
		params = map[string]any{}
	}
	b, err := json.Marshal(params)
	if err != nil {
		p.Add("parameters", "not representable as JSON: %v", err)
		return
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		p.Add("parameters", "%v", err)
		return
	}
	var ve *jsonschema.ValidationError
	if err := sch.Validate(inst); errors.As(err, &ve) {
		addSchemaErrors(p, "parameters", ve, inst, "")
	} else if err != nil {
		p.Add("parameters", "%v", err)
	}
}

// addSchemaErrors adds the leaves of a schema validation error, each at the
// path of the value it is about ("parameters.items[2]").
func addSchemaErrors(p *Problems, root string, e *jsonschema.ValidationError, inst any, prefix string) {
	if len(e.Causes) > 0 {
		for _, c := range e.Causes {
			addSchemaErrors(p, root, c, inst, prefix)
		}
		return
	}
	field := root
	v := inst
	for _, tok := range e.InstanceLocation {
		switch x := v.(type) {
		case []any:
			field += "[" + tok + "]"
			if i, err := strconv.Atoi(tok); err == nil && i >= 0 && i < len(x) {
				v = x[i]
			}
		case map[string]any:
			field += "." + tok
			v = x[tok]
		default:
			field += "." + tok
		}
	}
	if req, ok := e.ErrorKind.(*kind.Required); ok {
		for _, name := range req.Missing {
			p.Add(field+"."+name, "%srequired", prefix)
		}
		return
	}
	p.Add(field, "%s%s", prefix, e.ErrorKind.LocalizedString(schemaPrinter))
}
