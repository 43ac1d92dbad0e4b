package bench

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/ordoflow/ordo/domain"
)

// commandChain is a flow of n command tasks, each after the one before.
func commandChain(name string, n int, argv ...string) domain.FlowSpec {
	f := domain.FlowSpec{Name: name, Tasks: make([]domain.TaskSpec, n)}
	for i := range n {
		f.Tasks[i] = domain.TaskSpec{Name: fmt.Sprintf("t%03d", i), Command: argv}
		if i > 0 {
			f.Tasks[i].DependsOn = []string{f.Tasks[i-1].Name}
		}
	}
	return f
}

// CommandWallTimes is scenario 3, the workloads of the published
// orchestrator comparisons: a chain of command tasks that each sleep, and a
// chain of command tasks that exit at once (`true`), each timed from the
// run's creation to its end as the log records them, on a worker that has
// already run one task.
func CommandWallTimes(ctx context.Context, env Env, sleepTasks int, sleep time.Duration, lightTasks int) (sleepy, light time.Duration, err error) {
	o, err := openOrdo(ctx, env)
	if err != nil {
		return 0, 0, err
	}
	defer o.Close()
	w, err := o.worker(nil)
	if err != nil {
		return 0, 0, err
	}
	if err := w.Start(ctx); err != nil {
		return 0, 0, err
	}
	defer w.Stop(context.WithoutCancel(ctx)) //nolint:errcheck // the measures are taken
	if _, err := o.wallTime(ctx, commandChain("warmup", 1, "true")); err != nil {
		return 0, 0, err
	}
	secs := strconv.FormatFloat(sleep.Seconds(), 'f', -1, 64)
	env.logf("%d sequential command tasks, each `sleep %s`", sleepTasks, secs)
	if sleepy, err = o.wallTime(ctx, commandChain("sleep", sleepTasks, "sleep", secs)); err != nil {
		return 0, 0, err
	}
	env.logf("%d sequential command tasks, each `true`", lightTasks)
	if light, err = o.wallTime(ctx, commandChain("light", lightTasks, "true")); err != nil {
		return 0, 0, err
	}
	return sleepy, light, nil
}

// wallTime runs the flow and returns the time from its creation to its
// end, both as recorded in the log.
func (o *ordoDB) wallTime(ctx context.Context, flow domain.FlowSpec) (time.Duration, error) {
	d, _, err := o.runFlow(ctx, flow, nil)
	return d, err
}

func commandsScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	sz := opts.Sizes
	sleepy, light, err := CommandWallTimes(ctx, env, sz.SleepTasks, sz.Sleep, sz.LightTasks)
	if err != nil {
		return nil, err
	}
	ideal := time.Duration(sz.SleepTasks) * sz.Sleep
	published := ""
	if sz.SleepTasks == 10 && sz.Sleep == 500*time.Millisecond {
		published = "; published, other machines: Temporal 7.2 s, Hatchet 7.8 s, Prefect 15.5 s, Airflow 54.7 s"
	}
	r := sleepy.Seconds() / ideal.Seconds()
	rows := []Row{{
		What:     fmt.Sprintf("%d sequential command tasks, each `sleep %s` (run created → run ended)", sz.SleepTasks, strconv.FormatFloat(sz.Sleep.Seconds(), 'f', -1, 64)),
		Ordo:     seconds(sleepy),
		Baseline: "ideal " + seconds(ideal) + published,
		Ratio:    ratio(r),
		Target:   "within 5% of the ideal: ≤ " + seconds(ideal*105/100),
		Checks:   []Check{atMost("ratio", r, 1.05)},
		Metrics:  map[string]float64{"seconds": sleepy.Seconds(), "ideal_seconds": ideal.Seconds(), "ratio": r},
	}}
	lightRow := Row{
		What:    fmt.Sprintf("%d sequential light command tasks, each `true` (run created → run ended)", sz.LightTasks),
		Ordo:    seconds(light),
		Target:  "< " + seconds(sz.LightTarget),
		Checks:  []Check{atMost("seconds", light.Seconds(), sz.LightTarget.Seconds())},
		Metrics: map[string]float64{"seconds": light.Seconds(), "ms_per_task": float64(light.Milliseconds()) / float64(sz.LightTasks)},
		Note:    fmt.Sprintf("%.1f ms per task", float64(light.Microseconds())/1000/float64(sz.LightTasks)),
	}
	if sz.LightTasks == 40 {
		lightRow.Baseline = "published, another machine: Prefect 4.87 s"
	}
	return append(rows, lightRow), nil
}
