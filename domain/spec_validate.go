package domain

import (
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"
)

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
			d.checkDefaults(p, sch)
		}
	}
	d.validateNotifications(p)
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
