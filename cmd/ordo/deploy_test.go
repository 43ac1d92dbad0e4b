package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/client"
	"github.com/ordoflow/ordo/domain"
	pythonsdk "github.com/ordoflow/ordo/sdk/python"
)

// `ordo deploy FILE.py:FLOW` in process, with a stand-in for the Python
// tracer that prints what the contract says `python -m ordo trace` prints;
// deploy_e2e_test.go runs the real one.

// runOrdo runs the CLI in process and returns what it wrote and its exit
// status, the error printed as main prints it.
func runOrdo(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCommand()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(""))
	if err := root.ExecuteContext(t.Context()); err != nil {
		errOut.WriteString("ordo: " + err.Error() + "\n")
		return out.String(), errOut.String(), exitCode(err)
	}
	return out.String(), errOut.String(), 0
}

// tracedFlow is what the tracer prints for a flow "top" in flow.py that
// calls the sub-flow "child".
const tracedFlow = `{"deployments": [
 {"document": {"name": "top.child", "flow": {"name": "child", "tasks": [
   {"name": "a", "command": ["python3", "-m", "ordo", "run", "flow.py", "a"]}]}},
  "sources": {"": "flow.py:3", "parameters": "flow.py:3", "flow.tasks[0]": "flow.py:5"}},
 {"document": {"name": "top", "description": "The top flow.\nIt calls child.", "parameters": {"n": 3},
   "parameters_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
   "flow": {"name": "top", "tasks": [
     {"name": "child", "deployment": "top.child", "parameters": {"k": 2}},
     {"name": "b", "command": ["python3", "-m", "ordo", "run", "flow.py", "b", "--args", "{\"x\":{\"task\":\"child\"}}"],
      "depends_on": ["child"], "retries": 3, "retry_delay_seconds": 5},
     {"name": "c", "command": ["python3", "-m", "ordo", "run", "flow.py", "c"], "depends_on": ["b"], "retries": 3}]}},
  "sources": {"": "flow.py:10", "parameters": "flow.py:10", "flow.tasks[0]": "flow.py:12", "flow.tasks[1]": "flow.py:13", "flow.tasks[2]": "flow.py:14"}}
]}`

// fakeTracer writes an interpreter that records its arguments and
// PYTHONPATH in dir/argv, then prints stdout and stderr and exits with
// code; it returns its path and that of a flow file beside it.
func fakeTracer(t *testing.T, stdout, stderr string, code int) (python, flow, argvFile string) {
	t.Helper()
	dir := t.TempDir()
	flow = filepath.Join(dir, "flow.py")
	for name, content := range map[string]string{"stdout": stdout, "stderr": stderr, "flow.py": "# traced by the stand-in\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	argvFile = filepath.Join(dir, "argv")
	script := `#!/bin/sh
d=$(dirname "$0")
{ echo "$*"; echo "$PYTHONPATH"; } > "$d/argv"
cat "$d/stdout"; cat "$d/stderr" >&2
exit ` + string(rune('0'+code)) + "\n"
	python = filepath.Join(dir, "python3")
	if err := os.WriteFile(python, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return python, flow, argvFile
}

// deployServer stands for the API: it records the deployments it gets and
// answers each by answer (nil: saved).
type deployServer struct {
	mu     sync.Mutex
	names  []string
	answer func(name string) (int, any)
}

func startDeployServer(t *testing.T, answer func(name string) (int, any)) (*deployServer, string) {
	t.Helper()
	s := &deployServer{answer: answer}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var spec domain.DeploymentSpec
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/api/v1/deployments" || json.Unmarshal(body, &spec) != nil {
			t.Errorf("unexpected request %s %s: %s", r.Method, r.URL.Path, body)
			http.Error(w, "unexpected", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.names = append(s.names, spec.Name)
		s.mu.Unlock()
		status, v := http.StatusCreated, any(client.Deployment{ID: uuid.New(), Name: spec.Name, Version: 1, WorkQueue: spec.WorkQueue})
		if answer != nil {
			if st, a := answer(spec.Name); a != nil {
				status, v = st, a
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}))
	t.Cleanup(srv.Close)
	return s, srv.URL
}

func (s *deployServer) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.names...)
}

// dryRunSpecs reads the two deployments --dry-run printed for a flow with
// a sub-flow, each as -f would read it.
func dryRunSpecs(t *testing.T, out string) []domain.DeploymentSpec {
	t.Helper()
	docs := strings.Split(out, "\n---\n")
	if len(docs) != 2 {
		t.Fatalf("want two YAML documents, the sub-flow's first:\n%s", out)
	}
	var specs []domain.DeploymentSpec
	for _, d := range docs {
		spec, err := domain.ParseDeploymentYAML([]byte(d))
		if err != nil {
			t.Fatalf("a printed document is not a valid deployment file: %v\n%s", err, d)
		}
		specs = append(specs, spec)
	}
	return specs
}

func TestSourceOfTakesTheLongestWholePrefix(t *testing.T) {
	t.Parallel()
	sources := map[string]string{
		"": "flow.py:10", "parameters": "flow.py:10",
		"flow.tasks[1]": "flow.py:13", "flow.tasks[10]": "flow.py:40", "tags": "--tag",
	}
	for field, want := range map[string]string{
		"flow.tasks[1].retry_delay_seconds": "flow.py:13",
		"flow.tasks[1]":                     "flow.py:13",
		"flow.tasks[10].depends_on[0]":      "flow.py:40",
		"flow.tasks[12].retries":            "flow.py:10", // no source of its own: the flow's def
		"parameters.test_size":              "flow.py:10",
		"parameters_schema":                 "flow.py:10", // "parameters" is not a whole prefix of it
		"tags[0]":                           "--tag",
		"name":                              "flow.py:10",
	} {
		if got := sourceOf(sources, field); got != want {
			t.Errorf("sourceOf(%q) = %q, want %q", field, got, want)
		}
	}
	if got := sourceOf(map[string]string{"flow.tasks[1]": "flow.py:13"}, "name"); got != "" {
		t.Errorf("a field without a source: %q, want none", got)
	}
}

func TestDeployUsageErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	yamlFile, flowFile := filepath.Join(dir, "d.yaml"), filepath.Join(dir, "flow.py")
	for _, f := range []string{yamlFile, flowFile} {
		if err := os.WriteFile(f, []byte(cliDeployment), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, api := startDeployServer(t, func(name string) (int, any) {
		t.Errorf("a bad usage sent deployment %s", name)
		return 0, nil
	})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "give a deployment file (-f FILE) or a Python flow (FILE.py:FLOW_FUNCTION)"},
		{[]string{"-f", "flow.py"}, "-f takes a YAML or JSON deployment file; deploy a Python flow with `ordo deploy flow.py:FLOW_FUNCTION`"},
		{[]string{"-f", yamlFile, "flow.py:top"}, "give -f FILE or FILE.py:FLOW, not both"},
		{[]string{"-f", yamlFile, "--name", "x", "--interval", "60"}, "--name, --interval only go with FILE.py:FLOW"},
		{[]string{"flow.py"}, `"flow.py": want FILE.py:FLOW_FUNCTION`},
		{[]string{"flow.py:"}, `"flow.py:": want FILE.py:FLOW_FUNCTION`},
		{[]string{"flow.py:a", "flow.py:b"}, "one FILE.py:FLOW at a time"},
		{[]string{"flow.py:top", "--interval", "60", "--cron", "@daily"}, "give --interval or --cron, not both"},
		{[]string{"flow.py:top", "--timezone", "Europe/Paris"}, "--timezone is the time zone of a schedule"},
		{[]string{"flow.py:top"}, "flow.py: no such file or directory"},
		{[]string{flowFile + ":top", "--python", "/nonexistent/python3"}, `--python: interpreter "/nonexistent/python3"`},
	} {
		_, errOut, code := runOrdo(t, append([]string{"deploy", "--api-url", api}, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, "ordo: usage: "+tc.want) {
			t.Errorf("ordo deploy %s: exit %d, want 2 and %q:\n%s", strings.Join(tc.args, " "), code, tc.want, errOut)
		}
	}
}

func TestDeployFlowDryRun(t *testing.T) {
	t.Parallel()
	python, flow, argvFile := fakeTracer(t, tracedFlow, "a warning from the tracer\n", 0)
	_, api := startDeployServer(t, func(name string) (int, any) {
		t.Errorf("--dry-run sent deployment %s", name)
		return 0, nil
	})
	out, errOut, code := runOrdo(t, "deploy", flow+":top", "--api-url", api, "--python", python, "--name", "nightly",
		"--work-queue", "ml", "--tag", "py", "--tag", "nightly", "--cron", "0 6 * * *", "--timezone", "Europe/Paris", "--dry-run")
	if code != 0 {
		t.Fatalf("exit %d:\n%s%s", code, out, errOut)
	}
	if errOut != "a warning from the tracer\n" {
		t.Errorf("the tracer's stderr is not passed on as is: %q", errOut)
	}
	argv, _ := os.ReadFile(argvFile)
	lines := strings.Split(string(argv), "\n")
	sdk, err := pythonsdk.Extract(pythonsdk.DefaultDir())
	if err != nil {
		t.Fatal(err)
	}
	if lines[0] != "-m ordo trace "+flow+" top --name nightly" || !strings.HasSuffix(lines[1], sdk) {
		t.Errorf("the tracer ran as %q with PYTHONPATH %q; want its SDK %s last", lines[0], lines[1], sdk)
	}

	specs := dryRunSpecs(t, out)
	child, top := specs[0], specs[1]
	if child.Name != "top.child" || top.Name != "top" {
		t.Errorf("deployments %q, %q; want top.child then top", child.Name, top.Name)
	}
	for _, s := range specs {
		if s.WorkQueue != "ml" || strings.Join(s.Tags, ",") != "py,nightly" {
			t.Errorf("%s: work queue %q, tags %v; want ml and [py nightly] on every deployment", s.Name, s.WorkQueue, s.Tags)
		}
	}
	if child.Schedule != nil || top.Schedule == nil || top.Schedule.Cron != "0 6 * * *" || top.Schedule.Timezone != "Europe/Paris" {
		t.Errorf("schedules: child %+v, top %+v; want the cron on the top one only", child.Schedule, top.Schedule)
	}
	if b := top.Flow.Tasks[1]; b.Retries != 3 || strings.Join(b.DependsOn, ",") != "child" || b.Command[len(b.Command)-1] != `{"x":{"task":"child"}}` {
		t.Errorf("task b lost what the trace said: %+v", b)
	}
	if !strings.Contains(out, "description: |-\n  The top flow.\n  It calls child.\n") {
		t.Errorf("a multi-line description is not a literal block:\n%s", out)
	}
}

func TestDeployFlowErrorsNameTheSource(t *testing.T) {
	t.Parallel()

	t.Run("TraceErrorIsShownAsWritten", func(t *testing.T) {
		t.Parallel()
		msg := "flow.py:7: a future used as a bool: move this `if` into a task\n"
		python, flow, _ := fakeTracer(t, "", msg, 2)
		out, errOut, code := runOrdo(t, "deploy", flow+":top", "--python", python, "--dry-run")
		if code != 2 || !strings.HasPrefix(errOut, msg) || !strings.Contains(errOut, "ordo: "+flow+":top not deployed") || out != "" {
			t.Errorf("exit %d, stdout %q, stderr:\n%s", code, out, errOut)
		}
	})

	t.Run("TracerCrashFails", func(t *testing.T) {
		t.Parallel()
		python, flow, _ := fakeTracer(t, "", "Traceback ...\nKeyError: 'x'\n", 1)
		_, errOut, code := runOrdo(t, "deploy", flow+":top", "--python", python, "--dry-run")
		if code != 1 || !strings.Contains(errOut, "KeyError: 'x'") || !strings.Contains(errOut, "exit status 1") {
			t.Errorf("exit %d:\n%s", code, errOut)
		}
	})

	t.Run("LocalValidation", func(t *testing.T) {
		t.Parallel()
		python, flow, _ := fakeTracer(t, strings.Replace(tracedFlow, `"depends_on": ["b"], "retries": 3`, `"depends_on": ["b"], "retries": 300`, 1), "", 0)
		_, errOut, code := runOrdo(t, "deploy", flow+":top", "--python", python, "--dry-run")
		want := "ordo: deployment top: invalid deployment\nflow.py:14: flow.tasks[2].retries: must be between 0 and 100, got 300\n"
		if code != 2 || errOut != want {
			t.Errorf("exit %d, stderr:\n%s\nwant:\n%s", code, errOut, want)
		}
	})

	t.Run("FlagsAreNamed", func(t *testing.T) {
		t.Parallel()
		python, flow, _ := fakeTracer(t, tracedFlow, "", 0)
		for flag, want := range map[string]string{
			"--interval=0.5": "ordo: deployment top: invalid deployment\n--interval: schedule.interval_seconds: must be between 1",
			"--interval=0":   "ordo: deployment top: invalid deployment\n--interval: schedule: ",
			"--tag=":         "ordo: deployment top.child: invalid deployment\n--tag: tags[0]: ",
		} {
			_, errOut, code := runOrdo(t, "deploy", flow+":top", "--python", python, "--dry-run", flag)
			if code != 2 || !strings.HasPrefix(errOut, want) {
				t.Errorf("%s: exit %d, stderr:\n%s\nwant it to start with:\n%s", flag, code, errOut, want)
			}
		}
	})

	// The server's details, each against where its field comes from; the
	// sub-flow's deployment was sent first.
	t.Run("ServerErrors", func(t *testing.T) {
		t.Parallel()
		python, flow, _ := fakeTracer(t, tracedFlow, "", 0)
		var refusal client.Error
		refusal.Error.Code = "invalid"
		refusal.Error.Message = "invalid deployment: ..."
		for _, f := range []string{"flow.tasks[1].retry_delay_seconds", "parameters.n", "tags[0]"} {
			refusal.Error.Details = append(refusal.Error.Details, struct {
				Field   string `json:"field"`
				Message string `json:"message"`
			}{f, "refused"})
		}
		srv, api := startDeployServer(t, func(name string) (int, any) {
			if name == "top" {
				return http.StatusBadRequest, refusal
			}
			return 0, nil
		})
		out, errOut, code := runOrdo(t, "deploy", flow+":top", "--api-url", api, "--python", python, "--tag", "x")
		want := "ordo: deployment top: refused by the server\n" +
			"flow.py:13: flow.tasks[1].retry_delay_seconds: refused\n" +
			"flow.py:10: parameters.n: refused\n" +
			"--tag: tags[0]: refused\n"
		if code != 2 || errOut != want {
			t.Errorf("exit %d, stderr:\n%s\nwant:\n%s", code, errOut, want)
		}
		if got := srv.received(); strings.Join(got, ",") != "top.child,top" || !strings.HasPrefix(out, "deployment top.child version 1") {
			t.Errorf("sent %v, said %q; want top.child saved, then top", got, out)
		}
	})
}

// -f --dry-run prints the file as it would be sent, defaults applied.
func TestDeployFileDryRun(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "d.yaml")
	if err := os.WriteFile(file, []byte(cliDeployment), 0o644); err != nil {
		t.Fatal(err)
	}
	_, api := startDeployServer(t, func(name string) (int, any) {
		t.Errorf("--dry-run sent deployment %s", name)
		return 0, nil
	})
	out, errOut, code := runOrdo(t, "deploy", "-f", file, "--dry-run", "--api-url", api)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, errOut)
	}
	spec, err := domain.ParseDeploymentYAML([]byte(out))
	if err != nil || spec.Name != "cli-pipeline" || len(spec.Flow.Tasks) != 2 || !strings.Contains(out, "concurrency_policy: enqueue\n") {
		t.Errorf("printed (%v):\n%s", err, out)
	}
}
