package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// exampleTask is one task of the ML example run by hand, as a worker with
// the data plane runs it.
type exampleTask struct {
	outputs string         // its ORDO_OUTPUT_DIR
	metrics map[string]any // what it wrote to ORDO_METRICS_PATH
	result  map[string]any // what it wrote to ORDO_RESULT_PATH
	log     string
}

// runExampleTask runs one task of the example from the repository's root
// with the task contract's variables: an empty ORDO_OUTPUT_DIR, the
// outputs of its direct upstream tasks (depends_on) read-only under
// ORDO_INPUT_DIR/<task>/<name>, ORDO_METRICS_PATH and ORDO_RESULT_PATH.
func runExampleTask(t *testing.T, dir string, task domain.TaskSpec, params map[string]any, done map[string]*exampleTask, extraEnv ...string) (*exampleTask, error) {
	t.Helper()
	base := filepath.Join(dir, task.Name)
	out, in := filepath.Join(base, "out"), filepath.Join(base, "in")
	for _, d := range []string{out, in} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, up := range task.DependsOn {
		files, err := os.ReadDir(done[up].outputs)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(in, up), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			dst := filepath.Join(in, up, f.Name())
			if err := os.Link(filepath.Join(done[up].outputs, f.Name()), dst); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dst, 0o444); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(filepath.Join(in, up), 0o555); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(in, 0o555); err != nil {
		t.Fatal(err)
	}
	paramsJSON, _ := json.Marshal(params)
	metricsPath, resultPath := filepath.Join(base, "metrics.json"), filepath.Join(base, "result.json")
	args := slices.Clone(task.Command)
	if args[0] == "python3" {
		args[0] = "/usr/bin/python3"
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "HOME="+base, "MPLCONFIGDIR="+base,
		"ORDO_TASK_NAME="+task.Name, "ORDO_PARAMETERS="+string(paramsJSON), "ORDO_INPUTS={}",
		"ORDO_OUTPUT_DIR="+out, "ORDO_INPUT_DIR="+in, "ORDO_METRICS_PATH="+metricsPath, "ORDO_RESULT_PATH="+resultPath,
		"ORDO_WORKSPACE="+filepath.Join(base, "no-workspace")) // does not exist: a task that uses it fails
	cmd.Env = append(cmd.Env, extraEnv...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	err := cmd.Run()
	r := &exampleTask{outputs: out, log: log.String()}
	if err != nil {
		return r, err
	}
	for path, v := range map[string]*map[string]any{metricsPath: &r.metrics, resultPath: &r.result} {
		if raw, err := os.ReadFile(path); err == nil {
			if err := json.Unmarshal(raw, v); err != nil {
				t.Fatalf("%s: %s is not a JSON object: %v", task.Name, path, err)
			}
		}
	}
	return r, nil
}

func outputNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestMLExampleScriptsPassFilesAsOutputs runs the ML example's five tasks
// by hand in the order of deployment.yaml, each given only its direct
// upstream tasks' outputs, with no server and no worker: every task writes
// the outputs the next ones read, evaluate writes the metrics, a markdown
// report and a PNG plot, and without matplotlib it skips the plot and
// still succeeds.
func TestMLExampleScriptsPassFilesAsOutputs(t *testing.T) {
	t.Parallel()
	debianPython(t)
	dbURL := pgtest.URL(t)
	seed := exec.Command("/usr/bin/python3", "../../examples/ml-pipeline/seed.py", "--rows", "1000")
	seed.Env = append(os.Environ(), "ML_DATABASE_URL="+dbURL)
	if out, err := seed.CombinedOutput(); err != nil {
		t.Fatalf("seed: %v\n%s", err, out)
	}
	raw, err := os.ReadFile("../../examples/ml-pipeline/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := domain.ParseDeploymentYAML(raw)
	if err != nil {
		t.Fatal(err)
	}
	params := spec.Parameters
	params["n_estimators"] = 50 // quicker; the scores below still hold

	dir := t.TempDir()
	t.Cleanup(func() { // let TempDir remove the read-only input directories
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				_ = os.Chmod(p, 0o755)
			}
			return nil
		})
	})
	done := map[string]*exampleTask{}
	want := map[string][]string{
		"load_data":  {"raw.csv"},
		"preprocess": {"features.csv"},
		"split":      {"test.csv", "train.csv"},
		"train":      {"model.pkl"},
		"evaluate":   {"report.md", "residuals.png"},
	}
	for _, task := range spec.Flow.Tasks {
		r, err := runExampleTask(t, dir, task, params, done, "ML_DATABASE_URL="+dbURL)
		if err != nil {
			t.Fatalf("%s: %v\n%s", task.Name, err, r.log)
		}
		if got := outputNames(t, r.outputs); !slices.Equal(got, want[task.Name]) {
			t.Fatalf("%s: outputs %v, want %v\n%s", task.Name, got, want[task.Name], r.log)
		}
		if r.result == nil {
			t.Errorf("%s wrote no result", task.Name)
		}
		done[task.Name] = r
	}

	ev := done["evaluate"]
	for _, name := range []string{"r2", "rmse", "mae"} {
		v, ok := ev.metrics[name].(float64)
		if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
			t.Errorf("metric %s: %v, want a number", name, ev.metrics[name])
		}
	}
	if r2, _ := ev.metrics["r2"].(float64); r2 < 0.8 {
		t.Errorf("R² %v: the model should explain the generated prices", r2)
	}
	if rmse, _ := ev.metrics["rmse"].(float64); rmse <= 0 {
		t.Errorf("RMSE %v", rmse)
	}
	if ev.result["r2"] == nil || ev.result["rmse"] == nil || ev.result["test_rows"] == nil {
		t.Errorf("evaluate's result %v: want r2, rmse and test_rows (the run's result)", ev.result)
	}
	if rows, _ := done["load_data"].result["rows"].(float64); rows != 1000 {
		t.Errorf("load_data's result %v: want 1000 rows", done["load_data"].result)
	}
	png, err := os.ReadFile(filepath.Join(ev.outputs, "residuals.png"))
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("residuals.png is not a PNG (%d bytes, %v)", len(png), err)
	}
	report, err := os.ReadFile(filepath.Join(ev.outputs, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"# ", "| R² |", "| RMSE |", "| MAE |", "| test_size | 0.2 |", "| n_estimators | 50 |"} {
		if !strings.Contains(string(report), s) {
			t.Errorf("report.md lacks %q:\n%s", s, report)
		}
	}

	// where matplotlib cannot be imported, evaluate skips the plot and says so
	fake := t.TempDir()
	if err := os.WriteFile(filepath.Join(fake, "matplotlib.py"), []byte("raise ImportError('no matplotlib here')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	evalSpec := spec.Flow.Tasks[slices.IndexFunc(spec.Flow.Tasks, func(s domain.TaskSpec) bool { return s.Name == "evaluate" })]
	evalSpec.Name = "evaluate-without-matplotlib"
	r, err := runExampleTask(t, dir, evalSpec, params, done, "PYTHONPATH="+fake)
	if err != nil {
		t.Fatalf("evaluate without matplotlib: %v\n%s", err, r.log)
	}
	if got := outputNames(t, r.outputs); !slices.Equal(got, []string{"report.md"}) || !strings.Contains(r.log, "matplotlib is not installed") {
		t.Errorf("evaluate without matplotlib: outputs %v, log:\n%s", got, r.log)
	}
	if r.metrics["r2"] == nil {
		t.Errorf("evaluate without matplotlib recorded no metrics: %v", r.metrics)
	}
}
