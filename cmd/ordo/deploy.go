package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/client"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
	pythonsdk "github.com/ordoflow/ordo/sdk/python"
)

// deployOptions are the flags of `ordo deploy`.
type deployOptions struct {
	file      string   // -f: a YAML or JSON deployment
	name      string   // the top deployment's name (default: the flow's)
	workQueue string   // set on every deployment
	tags      []string // added to every deployment
	interval  float64  // schedule of the top deployment: every so many seconds
	cron      string   // ... or by a cron expression
	timezone  string   // ... in this time zone
	python    string   // interpreter that traces the flow
	dryRun    bool     // print the documents, send nothing
}

// flowDeployment is one deployment to send, and for a traced flow where
// its fields come from: a field path prefix -> "file:line" (or the flag
// that set it).
type flowDeployment struct {
	spec    domain.DeploymentSpec
	sources map[string]string
}

func newDeployCommand() *cobra.Command {
	c := newAPIClient()
	var o deployOptions
	cmd := &cobra.Command{
		Use:   "deploy (-f FILE | FILE.py:FLOW) [flags]",
		Short: "Create or update a deployment from a YAML or JSON file, or from a Python flow",
		Long: `Create or update a deployment.

With -f FILE, from a deployment document in YAML or JSON (- for standard input).

With FILE.py:FLOW, from the @flow function FLOW in FILE.py: ordo runs
"python -m ordo trace" on it (with the Ordo package of this binary on
PYTHONPATH) to build the flow's deployment, and one more for each sub-flow it
calls (named NAME.<sub-flow>, deployed first). --work-queue and --tag apply
to every one of them, the schedule (--interval or --cron) to FLOW's only.
The interpreter is --python, else python3 on PATH, else, when that one cannot
import what FILE.py imports, /usr/bin/python3. The path FILE.py is kept in
the tasks' commands as given: workers run them from their working directory.
Errors are reported against the Python source (file:line).

With --dry-run, print the documents that would be sent, as YAML, and send
nothing.`,
		Example: `  ordo deploy -f deployment.yaml
  ordo deploy flow.py:ml_pipeline --name ml-pipeline --work-queue ml --interval 300
  ordo deploy flow.py:ml_pipeline --cron '0 6 * * *' --timezone Europe/Paris --dry-run`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageError("one FILE.py:FLOW at a time, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			deps, err := o.deployments(cmd, args)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.dryRun {
				return writeDeploymentsYAML(out, deps)
			}
			for _, fd := range deps {
				d, err := deploymentSave(cmd.Context(), c, fd.spec)
				if err != nil {
					return sourceError(fd.spec.Name, err, fd.sources)
				}
				fmt.Fprintf(out, "deployment %s version %d (id %s) on work queue %s\n", d.Name, d.Version, d.ID, d.WorkQueue)
				for _, r := range d.NextRuns {
					fmt.Fprintf(out, "  next run %s at %s\n", r.ID, r.ScheduledAt.Local().Format(time.DateTime))
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.file, "file", "f", "", "deployment file, YAML or JSON (- for standard input)")
	f.StringVar(&o.name, "name", "", "FILE.py:FLOW: the deployment's name (default: the flow's name)")
	f.StringVar(&o.workQueue, "work-queue", "", "FILE.py:FLOW: the work queue of its runs (default: default)")
	f.StringArrayVar(&o.tags, "tag", nil, "FILE.py:FLOW: a tag of the deployment (repeatable)")
	f.Float64Var(&o.interval, "interval", 0, "FILE.py:FLOW: run it every so many seconds")
	f.StringVar(&o.cron, "cron", "", "FILE.py:FLOW: run it by a cron expression (5 fields, or @daily, @hourly ...)")
	f.StringVar(&o.timezone, "timezone", "", "FILE.py:FLOW: time zone of the schedule (default UTC)")
	f.StringVar(&o.python, "python", "", flagHelp("python", "FILE.py:FLOW: interpreter that traces the flow (default: python3 on PATH)"))
	f.BoolVar(&o.dryRun, "dry-run", false, "print the deployment documents as YAML and send nothing")
	// These describe one deployment: a variable a worker's environment
	// sets (ORDO_NAME, say) must not rename it.
	for _, name := range []string{"name", "work-queue", "tag", "interval", "cron", "timezone"} {
		_ = f.SetAnnotation(name, noEnv, []string{"true"})
	}
	c.register(cmd)
	return cmd
}

// deployments reads what the arguments name: a deployment file, or a
// Python flow traced into its deployments.
func (o *deployOptions) deployments(cmd *cobra.Command, args []string) ([]flowDeployment, error) {
	var pyOnly []string
	for _, name := range []string{"name", "work-queue", "tag", "interval", "cron", "timezone", "python"} {
		if cmd.Flags().Changed(name) {
			pyOnly = append(pyOnly, "--"+name)
		}
	}
	switch {
	case o.file != "" && len(args) > 0:
		return nil, usageError("give -f FILE or FILE.py:FLOW, not both")
	case o.file != "" && strings.HasSuffix(o.file, ".py"):
		return nil, usageError("-f takes a YAML or JSON deployment file; deploy a Python flow with `ordo deploy %s:FLOW_FUNCTION`", o.file)
	case o.file != "" && len(pyOnly) > 0:
		return nil, usageError("%s only go with FILE.py:FLOW; with -f the file says it all", strings.Join(pyOnly, ", "))
	case o.file != "":
		data, err := readInput(cmd, o.file)
		if err != nil {
			return nil, err
		}
		// validated here first, so that problems are named before anything is sent
		spec, err := domain.ParseDeploymentAuto(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.file, err)
		}
		return []flowDeployment{{spec: spec}}, nil
	case len(args) == 0:
		return nil, usageError("give a deployment file (-f FILE) or a Python flow (FILE.py:FLOW_FUNCTION)")
	}
	// a function's name has no colon, a path may
	i := strings.LastIndex(args[0], ":")
	file, fn := args[0][:max(i, 0)], args[0][i+1:]
	if file == "" || fn == "" {
		return nil, usageError("%q: want FILE.py:FLOW_FUNCTION, such as flow.py:ml_pipeline", args[0])
	}
	schedule, err := o.schedule(cmd.Flags().Changed("interval"))
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(file); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, usageError("%s: %v", file, err)
	}
	out, err := o.trace(cmd.Context(), file, fn, cmd.ErrOrStderr())
	if err != nil {
		return nil, err
	}
	return o.fromTrace(out, schedule, args[0])
}

// schedule is the top deployment's schedule from the flags, or nil.
// interval says whether --interval was given (0 is refused as any other
// bad interval).
func (o *deployOptions) schedule(interval bool) (*domain.Schedule, error) {
	switch {
	case interval && o.cron != "":
		return nil, usageError("give --interval or --cron, not both")
	case o.timezone != "" && !interval && o.cron == "":
		return nil, usageError("--timezone is the time zone of a schedule: give --interval or --cron too")
	case !interval && o.cron == "":
		return nil, nil
	}
	return &domain.Schedule{IntervalSeconds: o.interval, Cron: o.cron, Timezone: o.timezone}, nil
}

func usageError(format string, args ...any) error {
	return domain.Errorf(domain.CodeInvalid, "usage: "+format, args...)
}

// traceOutput is what `python -m ordo trace` prints.
type traceOutput struct {
	Deployments []struct {
		Document json.RawMessage   `json:"document"`
		Sources  map[string]string `json:"sources"`
	} `json:"deployments"`
}

// fromTrace checks the traced documents as the server would and adds what
// the flags say: the work queue and tags to every deployment, the schedule
// to the last (the flow's own).
func (o *deployOptions) fromTrace(out []byte, schedule *domain.Schedule, what string) ([]flowDeployment, error) {
	var t traceOutput
	err := json.Unmarshal(out, &t)
	if err != nil {
		// what the flow's module printed when imported comes first
		err = json.Unmarshal([]byte(lastLine(out)), &t)
	}
	if err != nil || len(t.Deployments) == 0 {
		return nil, fmt.Errorf("trace %s: the Ordo package printed no deployments (%v): %.300q", what, err, out)
	}
	var deps []flowDeployment
	for i, td := range t.Deployments {
		sources := map[string]string{"work_queue": "--work-queue", "tags": "--tag"}
		for k, v := range td.Sources {
			sources[k] = v
		}
		top := i == len(t.Deployments)-1
		spec, err := domain.ParseDeployment(td.Document)
		if err == nil {
			if o.workQueue != "" {
				spec.WorkQueue = o.workQueue
			}
			spec.Tags = append(spec.Tags, o.tags...)
			if top && schedule != nil {
				spec.Schedule = schedule
				sources["schedule"] = "--interval"
				if schedule.Cron != "" {
					sources["schedule"] = "--cron"
				}
			}
			err = spec.Validate()
		}
		if err != nil {
			var named struct{ Name string }
			if json.Unmarshal(td.Document, &named) != nil || named.Name == "" {
				named.Name = what
			}
			return nil, sourceError(named.Name, err, sources)
		}
		deps = append(deps, flowDeployment{spec: spec, sources: sources})
	}
	return deps, nil
}

// sourceError reports an invalid deployment's field problems each on a
// line that starts with where the field comes from (sourceOf), as
// compilers do, so that an editor can jump there.
func sourceError(name string, err error, sources map[string]string) error {
	var de *domain.Error
	if sources == nil || !errors.As(err, &de) || len(de.Details) == 0 {
		return err
	}
	var b strings.Builder
	msg := de.Message
	if msg == "" {
		msg = "invalid deployment"
	}
	fmt.Fprintf(&b, "deployment %s: %s", name, msg)
	for _, d := range de.Details {
		b.WriteString("\n")
		if src := sourceOf(sources, d.Field); src != "" {
			b.WriteString(src + ": ")
		}
		b.WriteString(d.Field + ": " + d.Message)
	}
	return &domain.Error{Code: de.Code, Message: b.String()}
}

// sourceOf is where field comes from: the source of the longest prefix of
// field that sources has, a prefix ending where a path element ends
// ("flow.tasks[1]" is a prefix of "flow.tasks[1].retries", not of
// "flow.tasks[10]"); "" when none is.
func sourceOf(sources map[string]string, field string) string {
	longest, src := -1, ""
	for prefix, s := range sources {
		if len(prefix) <= longest || !strings.HasPrefix(field, prefix) {
			continue
		}
		if rest := field[len(prefix):]; prefix != "" && rest != "" && rest[0] != '.' && rest[0] != '[' {
			continue
		}
		longest, src = len(prefix), s
	}
	return src
}

// deploymentSave sends one deployment. An error answer keeps the server's
// field details, for sourceError.
func deploymentSave(ctx context.Context, c *apiClient, spec domain.DeploymentSpec) (*client.Deployment, error) {
	body, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	var details []domain.Detail
	parse := func(resp *http.Response) (*client.DeploymentSaveResponse, error) {
		r, err := client.ParseDeploymentSaveResponse(resp)
		if err == nil && r.JSONDefault != nil {
			for _, d := range r.JSONDefault.Error.Details {
				details = append(details, domain.Detail{Field: d.Field, Message: d.Message})
			}
		}
		return r, err
	}
	resp, err := c.api().DeploymentSaveWithBody(ctx, nil, "application/json", bytes.NewReader(body))
	d, err := read(c, resp, err, parse, func(r *client.DeploymentSaveResponse) *client.Deployment {
		if r.JSON201 != nil {
			return r.JSON201
		}
		return r.JSON200
	})
	var de *domain.Error
	if err != nil && len(details) > 0 && errors.As(err, &de) {
		// de.Message already holds the details: keep one copy of them
		return nil, &domain.Error{Code: de.Code, Message: "refused by the server", Details: details}
	}
	return d, err
}

// trace runs `python -m ordo trace FILE FLOW [--name NAME]` and returns
// its standard output. What the tracer writes on stderr is passed on as
// is: its errors name file:line.
func (o *deployOptions) trace(ctx context.Context, file, fn string, stderr io.Writer) ([]byte, error) {
	sdk, err := pythonsdk.Extract(pythonsdk.DefaultDir())
	if err != nil {
		return nil, err
	}
	args := []string{"-m", "ordo", "trace", file, fn}
	if o.name != "" {
		args = append(args, "--name", o.name)
	}
	env := pythonsdk.WithPythonPath(os.Environ(), sdk)
	run := func(python string) (stdout, errOut []byte, err error) {
		cmd := exec.CommandContext(ctx, python, args...)
		cmd.Env = env
		var out, eb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &eb
		err = cmd.Run()
		return out.Bytes(), eb.Bytes(), err
	}

	python, explicit := o.python, o.python != ""
	if explicit {
		if python, err = jobs.ResolvePython(python); err != nil {
			return nil, usageError("--python: %v", err)
		}
	} else if python = pathPython(); python == "" {
		if _, err := os.Stat(fallbackPython); err != nil {
			return nil, fmt.Errorf("no python3 on PATH to trace the flow with: set --python (or ORDO_PYTHON)")
		}
		python = fallbackPython
	}
	out, errOut, err := run(python)
	if err != nil && !explicit && isImportError(errOut) && otherPython(python) {
		out2, errOut2, err2 := run(fallbackPython)
		if err2 == nil {
			fmt.Fprintf(stderr, "ordo: python3 on PATH (%s) cannot import what %s imports (%s); traced the flow with %s, which can (workers need such an interpreter too: their --python)\n",
				python, file, lastLine(errOut), fallbackPython)
			python, out, errOut, err = fallbackPython, out2, errOut2, nil
		} else {
			defer fmt.Fprintf(stderr, "ordo: %s cannot trace it either: %s\n", fallbackPython, lastLine(errOut2))
		}
	}
	stderr.Write(errOut)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 2 {
			// a mistake in the flow, which the tracer named
			return nil, domain.Errorf(domain.CodeInvalid, "%s:%s not deployed: the trace failed (above)", file, fn)
		}
		return nil, fmt.Errorf("trace %s:%s with %s: %w", file, fn, python, err)
	}
	return out, nil
}

// isImportError reports whether a trace failed on a module the
// interpreter lacks.
func isImportError(stderr []byte) bool {
	return bytes.Contains(stderr, []byte("ModuleNotFoundError")) || bytes.Contains(stderr, []byte("ImportError"))
}

// otherPython reports whether fallbackPython exists and is not python.
func otherPython(python string) bool {
	fb, err := filepath.EvalSymlinks(fallbackPython)
	if err != nil {
		return false
	}
	p, err := filepath.EvalSymlinks(python)
	return err != nil || p != fb
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// writeDeploymentsYAML prints the deployments as one YAML stream, fields
// in the order of the API's document.
func writeDeploymentsYAML(w io.Writer, deps []flowDeployment) error {
	for i, fd := range deps {
		js, err := json.Marshal(fd.spec)
		if err != nil {
			return err
		}
		var doc any
		if err := yaml.UnmarshalWithOptions(js, &doc, yaml.UseOrderedMap()); err != nil {
			return err
		}
		y, err := yaml.MarshalWithOptions(doc, yaml.UseLiteralStyleIfMultiline(true), yaml.IndentSequence(true))
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(w, "---")
		}
		if _, err := w.Write(y); err != nil {
			return err
		}
	}
	return nil
}

func readInput(cmd *cobra.Command, file string) ([]byte, error) {
	if file == "-" {
		return io.ReadAll(cmd.InOrStdin())
	}
	return os.ReadFile(file)
}
