package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
	pythonsdk "github.com/ordoflow/ordo/sdk/python"
)

// The Python scenarios run flows written with Ordo's Python package on an
// in-process worker, with Debian's interpreter, which has the example's
// libraries: the example pipeline next to the same flow called in one
// fresh Python process, and a trivial task's start to end.

// benchPython is the interpreter of the Python scenarios.
const benchPython = "/usr/bin/python3"

// pythonExample is the example flow, relative to the repository's root.
const pythonExample = "examples/ml-pipeline-py/flow.py"

// pythonSkip says why the Python scenarios cannot run here, or "".
func pythonSkip(ctx context.Context, modules string) string {
	if out, err := exec.CommandContext(ctx, benchPython, "-c", "import "+modules).CombinedOutput(); err != nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return fmt.Sprintf("skipped: %s cannot import %s (%s; scripts/install-deps ml installs them)", benchPython, modules, lines[len(lines)-1])
	}
	return ""
}

// repoFile finds a file of the repository from the working directory or
// one of its parents.
func repoFile(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%s not found: run ordo bench from the repository", rel)
		}
		dir = parent
	}
}

// pyEnv is the environment of the Python processes the scenarios start
// themselves, with the SDK the binary carries on PYTHONPATH.
type pyEnv struct {
	sdk string // the directory to put on PYTHONPATH
}

func newPyEnv(env Env) (pyEnv, error) {
	dir, err := pythonsdk.Extract(filepath.Join(env.TempDir, "python-sdk"))
	if err != nil {
		return pyEnv{}, fmt.Errorf("extract the python sdk: %w", err)
	}
	return pyEnv{sdk: dir}, nil
}

func (p pyEnv) command(ctx context.Context, extra []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, benchPython, args...)
	cmd.Env = append(append(os.Environ(), "PYTHONPATH="+p.sdk), extra...)
	return cmd
}

func (p pyEnv) run(ctx context.Context, extra []string, args ...string) ([]byte, error) {
	cmd := p.command(ctx, extra, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}

// trace reads the flow FUNCTION of file as `ordo deploy` does, and returns
// the top deployment's flow and parameters.
func (p pyEnv) trace(ctx context.Context, file, function string) (domain.FlowSpec, map[string]any, error) {
	out, err := p.run(ctx, nil, "-m", "ordo", "trace", file, function)
	if err != nil {
		return domain.FlowSpec{}, nil, err
	}
	var traced struct {
		Deployments []struct {
			Document struct {
				Parameters map[string]any  `json:"parameters"`
				Flow       domain.FlowSpec `json:"flow"`
			} `json:"document"`
		} `json:"deployments"`
	}
	err = json.Unmarshal(out, &traced)
	if err != nil { // what the module printed when imported comes first
		lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
		err = json.Unmarshal(lines[len(lines)-1], &traced)
	}
	if err != nil || len(traced.Deployments) == 0 {
		return domain.FlowSpec{}, nil, fmt.Errorf("trace %s:%s: %v: %.200s", file, function, err, out)
	}
	doc := traced.Deployments[len(traced.Deployments)-1].Document
	return doc.Flow, doc.Parameters, nil
}

// pythonWorker is a database with a worker that runs Python tasks, with
// the warm interpreter or without.
// taskEnv is added to the worker's environment, for tasks that inherit it.
func pythonWorker(ctx context.Context, env Env, warm bool, taskEnv ...string) (*ordoDB, *jobs.Worker, error) {
	o, err := openOrdo(ctx, env)
	if err != nil {
		return nil, nil, err
	}
	name := "cold"
	if warm {
		name = "warm"
	}
	w, err := jobs.NewWorker(o.pool, o.store, jobs.WorkerOptions{
		Queues: []string{domain.DefaultWorkQueue}, Concurrency: 10, Python: benchPython, DisableWarmPython: !warm,
		BlobStore:     blobstore.NewPostgres(o.pool), // ordo worker's default
		FetchCooldown: FetchCooldown, FetchPollInterval: FetchPollInterval,
		WorkspaceDir: filepath.Join(env.TempDir, "workspaces-python-"+name), Logger: quiet,
		Env: append(os.Environ(), taskEnv...),
	})
	if err == nil {
		err = w.Start(ctx)
	}
	if err != nil {
		o.Close()
		return nil, nil, err
	}
	return o, w, nil
}

func stopPythonWorker(ctx context.Context, o *ordoDB, w *jobs.Worker) {
	_ = w.Stop(context.WithoutCancel(ctx))
	o.Close()
}

// runFlow runs the flow with these parameters and returns the time from
// the run's creation to its end, both as recorded in the log, and the
// run's id.
func (o *ordoDB) runFlow(ctx context.Context, flow domain.FlowSpec, params map[string]any) (time.Duration, string, error) {
	run, err := o.svc.RunCreate(ctx, commands.RunCreateParams{Flow: flow, Parameters: params, Actor: "bench"})
	if err != nil {
		return 0, "", err
	}
	for deadline := time.Now().Add(5 * time.Minute); ; {
		var (
			typ          string
			created, end time.Time
		)
		err := o.pool.QueryRow(ctx, `
SELECT e.type, c.recorded_at, e.recorded_at
FROM events c JOIN events e ON e.stream_id = c.stream_id
WHERE c.stream_id = $1 AND c.type = 'FlowRunCreated'
  AND e.type IN ('FlowRunCompleted', 'FlowRunFailed', 'FlowRunCancelled', 'FlowRunCrashed')`, run.ID).Scan(&typ, &created, &end)
		switch {
		case err == nil && typ == "FlowRunCompleted":
			return end.Sub(created), run.ID.String(), nil
		case err == nil:
			return 0, "", fmt.Errorf("flow %s: the run ended with %s%s", flow.Name, typ, o.failures(ctx, run.ID.String()))
		case !errors.Is(err, pgx.ErrNoRows):
			return 0, "", err
		case time.Now().After(deadline):
			return 0, "", fmt.Errorf("flow %s: run %s not ended after 5 minutes", flow.Name, run.ID)
		}
		select {
		case <-ctx.Done():
			return 0, "", ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// failures are the errors of the run's failed attempts, for the message of
// a run that did not complete.
func (o *ordoDB) failures(ctx context.Context, runID string) string {
	var errs []string
	rows, err := o.pool.Query(ctx, `
SELECT e.data->>'error' FROM events c JOIN events e ON e.stream_id = c.stream_id
WHERE c.type = 'TaskRunCreated' AND c.data->>'flow_run_id' = $1 AND e.data ? 'error'`, runID)
	if err == nil {
		errs, _ = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if len(errs) == 0 {
		return ""
	}
	return ": " + strings.Join(errs, "; ")
}

// taskStartToEnd is, for each task run of the run, the time from its last
// start to its completion as the log records them.
func (o *ordoDB) taskStartToEnd(ctx context.Context, runID string) ([]time.Duration, error) {
	rows, err := o.pool.Query(ctx, `
SELECT max(s.recorded_at), max(d.recorded_at)
FROM events c
JOIN events s ON s.stream_id = c.stream_id AND s.type = 'TaskRunStarted'
JOIN events d ON d.stream_id = c.stream_id AND d.type = 'TaskRunCompleted'
WHERE c.type = 'TaskRunCreated' AND c.data->>'flow_run_id' = $1
GROUP BY c.stream_id`, runID)
	if err != nil {
		return nil, err
	}
	var out []time.Duration
	var start, end time.Time
	_, err = pgx.ForEachRow(rows, []any{&start, &end}, func() error {
		out = append(out, end.Sub(start))
		return nil
	})
	return out, err
}

func pythonPipelineScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	sz := opts.Sizes
	what := fmt.Sprintf("the Python example pipeline (%s, 5 tasks, %d houses), warm interpreter, after a first run (run created → run ended)", pythonExample, sz.PythonRows)
	if skip := pythonSkip(ctx, "sklearn, pandas, psycopg2"); skip != "" {
		return []Row{{What: what, Note: skip}}, nil
	}
	file, err := repoFile(pythonExample)
	if err != nil {
		return []Row{{What: what, Note: "skipped: " + err.Error()}}, nil
	}
	seed, err := repoFile("examples/ml-pipeline/seed.py")
	if err != nil {
		return nil, err
	}
	py, err := newPyEnv(env)
	if err != nil {
		return nil, err
	}
	dataURL, err := env.newDatabase(ctx)
	if err != nil {
		return nil, err
	}
	dbEnv := []string{"ML_DATABASE_URL=" + dataURL}
	env.logf("seeding %d houses", sz.PythonRows)
	if _, err := py.run(ctx, dbEnv, seed, "--rows", fmt.Sprint(sz.PythonRows)); err != nil {
		return nil, err
	}
	flow, params, err := py.trace(ctx, file, "ml_pipeline")
	if err != nil {
		return nil, err
	}
	warmDB, warmW, err := pythonWorker(ctx, env, true, dbEnv...)
	if err != nil {
		return nil, err
	}
	defer stopPythonWorker(ctx, warmDB, warmW)
	coldDB, coldW, err := pythonWorker(ctx, env, false, dbEnv...)
	if err != nil {
		return nil, err
	}
	defer stopPythonWorker(ctx, coldDB, coldW)

	local := func() (time.Duration, error) {
		began := time.Now()
		_, err := py.run(ctx, dbEnv, file)
		return time.Since(began), err
	}
	// the first run starts the warm interpreter (and fills the page cache
	// for every side); a single round shows only that every side runs, so
	// the other sides need no warming
	env.logf("first runs")
	if _, _, err := warmDB.runFlow(ctx, flow, params); err != nil {
		return nil, err
	}
	if sz.PythonRounds > 1 {
		if _, _, err := coldDB.runFlow(ctx, flow, params); err != nil {
			return nil, err
		}
		if _, err := local(); err != nil {
			return nil, err
		}
	}

	var locals, warms, colds, warmRatios, coldRatios []float64
	for round := range sz.PythonRounds {
		env.logf("round %d of %d", round+1, sz.PythonRounds)
		// the three sides take turns at going first
		sides := []func() (time.Duration, error){
			local,
			func() (time.Duration, error) { d, _, err := warmDB.runFlow(ctx, flow, params); return d, err },
			func() (time.Duration, error) { d, _, err := coldDB.runFlow(ctx, flow, params); return d, err },
		}
		took := make([]time.Duration, 3)
		for i := range sides {
			side := (i + round) % 3
			if took[side], err = sides[side](); err != nil {
				return nil, err
			}
		}
		locals = append(locals, took[0].Seconds())
		warms = append(warms, took[1].Seconds())
		colds = append(colds, took[2].Seconds())
		warmRatios = append(warmRatios, took[1].Seconds()/took[0].Seconds())
		coldRatios = append(coldRatios, took[2].Seconds()/took[0].Seconds())
	}
	warmRatio, coldRatio := median(warmRatios), median(coldRatios)
	baseline := fmt.Sprintf("the same flow called in one fresh Python process (`python3 flow.py`), same rounds: %.2f s", median(locals))
	return []Row{{
		What:     what,
		Ordo:     fmt.Sprintf("%.2f s", median(warms)),
		Baseline: baseline,
		Ratio:    ratio(warmRatio),
		Target:   "≤ 1.25 × the local call",
		Checks:   []Check{atMost("ratio", warmRatio, 1.25)},
		Metrics:  map[string]float64{"seconds": median(warms), "local_seconds": median(locals), "ratio": warmRatio},
		Note:     fmt.Sprintf("median of %d per-round ratios (%s), the sides taking turns at going first", len(warmRatios), span(warmRatios)),
	}, {
		What:     strings.Replace(what, "warm interpreter", "warm interpreter off (`--warm-python=false`)", 1),
		Ordo:     fmt.Sprintf("%.2f s", median(colds)),
		Baseline: baseline,
		Ratio:    ratio(coldRatio),
		Metrics:  map[string]float64{"seconds": median(colds), "local_seconds": median(locals), "ratio": coldRatio},
		Note:     fmt.Sprintf("median of %d per-round ratios (%s)", len(coldRatios), span(coldRatios)),
	}}, nil
}

// trivialFlow is a flow of one task that returns 1.
const trivialFlow = `from ordo import flow, task


@task
def one():
    return 1


@flow
def trivial():
    one()
`

func pythonTrivialScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	sz := opts.Sizes
	what := fmt.Sprintf("a trivial Python task (`return 1`), warm interpreter, %d runs one after the other (task started → task completed)", sz.PythonTrivialRuns)
	if skip := pythonSkip(ctx, "json"); skip != "" {
		return []Row{{What: what, Note: skip}}, nil
	}
	py, err := newPyEnv(env)
	if err != nil {
		return nil, err
	}
	file := filepath.Join(env.TempDir, "python-trivial", "trivial.py")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(file, []byte(trivialFlow), 0o644); err != nil {
		return nil, err
	}
	flow, params, err := py.trace(ctx, file, "trivial")
	if err != nil {
		return nil, err
	}
	var rows []Row
	for _, warm := range []bool{true, false} {
		o, w, err := pythonWorker(ctx, env, warm)
		if err != nil {
			return nil, err
		}
		var tasks, runs []float64
		for i := range sz.PythonTrivialRuns + 1 {
			d, id, err := o.runFlow(ctx, flow, params)
			if err == nil && i > 0 { // the first starts the warm interpreter
				var ds []time.Duration
				ds, err = o.taskStartToEnd(ctx, id)
				for _, t := range ds {
					tasks = append(tasks, float64(t.Microseconds())/1000)
				}
				runs = append(runs, float64(d.Microseconds())/1000)
			}
			if err != nil {
				stopPythonWorker(ctx, o, w)
				return nil, err
			}
		}
		stopPythonWorker(ctx, o, w)
		slices.Sort(tasks)
		slices.Sort(runs)
		row := Row{
			What:    what,
			Ordo:    fmt.Sprintf("p50 %s, p99 %s", millis(percentile(tasks, 0.5)), millis(percentile(tasks, 0.99))),
			Metrics: map[string]float64{"p50_ms": percentile(tasks, 0.5), "p99_ms": percentile(tasks, 0.99), "run_p50_ms": percentile(runs, 0.5)},
			Note:    fmt.Sprintf("run created → run ended: p50 %s", millis(percentile(runs, 0.5))),
		}
		if warm {
			row.Target = "p50 ≤ 20 ms"
			row.Checks = []Check{atMost("p50 ms", percentile(tasks, 0.5), 20)}
		} else {
			row.What = strings.Replace(what, "warm interpreter", "warm interpreter off", 1)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// span is "lowest–highest" of xs, to two decimals.
func span(xs []float64) string {
	return fmt.Sprintf("%.2f–%.2f", slices.Min(xs), slices.Max(xs))
}
