package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/client"
	"github.com/ordoflow/ordo/domain"
)

// findDeployment reads a deployment by its name or id: the API takes
// either.
func findDeployment(ctx context.Context, c *apiClient, nameOrID string) (*client.Deployment, error) {
	resp, err := c.api().DeploymentGet(ctx, nameOrID)
	return read(c, resp, err, client.ParseDeploymentGetResponse, (*client.DeploymentGetResponse).GetJSON200)
}

// getRun reads RUN, a run's id or its name as `ordo run` and `runs ls`
// print it: the API resolves a name, and refuses one that several runs
// carry with their ids.
func getRun(ctx context.Context, c *apiClient, nameOrID string) (*client.FlowRun, error) {
	resp, err := c.api().RunGet(ctx, nameOrID)
	return read(c, resp, err, client.ParseRunGetResponse, (*client.RunGetResponse).GetJSON200)
}

// findRun resolves RUN to the run's id, for commands that make several
// requests about one run.
func findRun(ctx context.Context, c *apiClient, nameOrID string) (string, error) {
	if _, err := uuid.Parse(nameOrID); err == nil {
		return nameOrID, nil
	}
	run, err := getRun(ctx, c, nameOrID)
	if err != nil {
		return "", err
	}
	return run.ID, nil
}

func newRunCommand() *cobra.Command {
	c := newAPIClient()
	var (
		params []string
		watch  bool
		key    string
		name   string
	)
	cmd := &cobra.Command{
		Use:   "run DEPLOYMENT [--param key=value]... [--watch]",
		Short: "Start a run of a deployment now",
		Long: `Start a run of a deployment (by name or id), with parameter overrides.
Values are read as JSON when they parse (--param test_size=0.3), else as text.
Only parameters the deployment has (its defaults and its schema's properties)
may be given: a misspelt one is refused with the closest name.
With --watch, show the task runs' states live until the run ends; the exit
status is then 0 for COMPLETED, 1 for FAILED or CRASHED, 3 for CANCELLED.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			overrides := map[string]any{}
			for _, p := range params {
				k, v, ok := strings.Cut(p, "=")
				if !ok || k == "" {
					return domain.Invalid("param", "%q is not key=value", p)
				}
				var val any
				if json.Unmarshal([]byte(v), &val) != nil {
					val = v
				}
				overrides[k] = val
			}
			d, err := findDeployment(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			resp, err := c.api().RunCreate(cmd.Context(), d.ID.String(), nil, client.RunCreateJSONRequestBody{
				Parameters: &overrides, IdempotencyKey: opt(key), Name: opt(name),
			})
			run, err := read(c, resp, err, client.ParseRunCreateResponse, (*client.RunCreateResponse).GetJSON201)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "run %s (%s) of %s started\n", run.Name, run.ID, d.Name)
			if !watch {
				return nil
			}
			return watchRun(cmd.Context(), c, run.ID, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringArrayVarP(&params, "param", "p", nil, "parameter override key=value (repeatable)")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "follow the run until it ends; the exit status says how it ended")
	cmd.Flags().StringVar(&key, "idempotency-key", "", "a key that makes a repeated command start no second run")
	cmd.Flags().StringVar(&name, "name", "", "the run's name (default: the flow's name and a random suffix)")
	c.register(cmd)
	return cmd
}

// watchRun prints every task run's state change and a progress line until
// the run ends, and returns an exitError that says how it ended.
func watchRun(ctx context.Context, c *apiClient, id string, out io.Writer) error {
	seen := map[string]string{}
	lastProgress := ""
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		run, err := getRun(ctx, c, id)
		if err != nil {
			return err
		}
		for _, t := range run.TaskRuns {
			label := string(t.State.Type) + "/" + t.State.Name
			if seen[t.ID] != label {
				seen[t.ID] = label
				line := fmt.Sprintf("%s  %-24s %s", time.Now().Format("15:04:05"), t.TaskName, stateLabel(t.State))
				if t.State.Message != "" {
					line += "  " + t.State.Message
				}
				fmt.Fprintln(out, line)
			}
		}
		if progress := watchProgress(*run, time.Now()); progress != lastProgress {
			lastProgress = progress
			fmt.Fprintln(out, progress)
		}
		if run.State.Type.Terminal() {
			fmt.Fprintf(out, "run %s ended %s", run.Name, stateLabel(run.State))
			if run.State.Message != "" {
				fmt.Fprintf(out, ": %s", run.State.Message)
			}
			fmt.Fprintln(out)
			if len(run.Result) > 0 && string(run.Result) != "null" {
				fmt.Fprintf(out, "result: %s\n", run.Result)
			}
			switch domain.StateType(run.State.Type) {
			case domain.Completed:
				return nil
			case domain.Cancelled:
				return &exitError{code: 3, err: errors.New("the run was cancelled")}
			default:
				return &exitError{code: 1, err: fmt.Errorf("the run ended %s", run.State.Type)}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// watchProgress is the line --watch prints when it changes: what the run is
// doing and its task runs counted by state, in lifecycle order. A run of a
// deployment stays SCHEDULED until a worker starts its first task (so that it
// can be marked Late), while its task runs are PENDING from the start: the
// line says that such a run waits for a worker, rather than a bare SCHEDULED
// beside PENDING tasks.
func watchProgress(run client.FlowRun, now time.Time) string {
	label := stateLabel(run.State)
	if domain.StateType(run.State.Type) == domain.Scheduled {
		if run.ScheduledAt.After(now) {
			label += ", due at " + run.ScheduledAt.Local().Format(time.TimeOnly)
		} else {
			label += ", due: waiting for a worker on queue " + run.WorkQueue
		}
	}
	counts := map[domain.StateType]int{}
	done := 0
	for _, t := range run.TaskRuns {
		counts[domain.StateType(t.State.Type)]++
		if t.State.Type.Terminal() {
			done++
		}
	}
	var parts []string
	for _, st := range domain.StateTypes {
		if counts[st] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[st], st))
		}
	}
	return fmt.Sprintf("  run %s: %d/%d task runs finished (%s)", label, done, len(run.TaskRuns), strings.Join(parts, ", "))
}

func stateLabel(s client.State) string {
	if s.Name == "" || strings.EqualFold(s.Name, string(s.Type)) {
		return string(s.Type)
	}
	return fmt.Sprintf("%s (%s)", s.Type, s.Name)
}

func newRunsCommand() *cobra.Command {
	c := newAPIClient()
	cmd := &cobra.Command{Use: "runs", Short: "List, inspect and cancel flow runs",
		Long: "List, inspect, cancel and retry flow runs. RUN is a run's id or its name, as `ordo run` and `ordo runs ls` print them."}

	var state, tag, deployment, name, queue, metric string
	var limit int
	var upcoming bool
	ls := &cobra.Command{
		Use:   "ls [--upcoming]",
		Short: "List flow runs that started or are due, newest first; with --upcoming, the runs scheduled for later",
		Long: `List flow runs that started or are due, newest first. Runs a schedule
created ahead (SCHEDULED for a time still to come) are not among them:
--upcoming lists those, soonest first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			params := &client.RunListParams{Deployment: opt(deployment), Name: opt(name), WorkQueue: opt(queue), Limit: &limit}
			if state != "" {
				params.State = &[]string{strings.ToUpper(state)}
			}
			if tag != "" {
				params.Tag = &[]string{tag}
			}
			if upcoming {
				params.Upcoming = opt("true")
			}
			resp, err := c.api().RunList(cmd.Context(), params)
			page, err := read(c, resp, err, client.ParseRunListResponse, (*client.RunListResponse).GetJSON200)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			head := "ID\tNAME\tDEPLOYMENT\tQUEUE\tSTATE\tSCHEDULED\tTAGS"
			if metric != "" {
				head += "\t" + strings.ToUpper(metric)
			}
			fmt.Fprintln(w, head)
			for _, r := range page.Items {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s", r.ID, r.Name, r.DeploymentName, r.WorkQueue, stateLabel(r.State),
					r.ScheduledAt.Local().Format(time.DateTime), strings.Join(r.Tags, ","))
				if v, ok := r.Metrics[metric]; ok && metric != "" {
					fmt.Fprintf(w, "\t%s", strconv.FormatFloat(v, 'g', -1, 64))
				} else if metric != "" {
					fmt.Fprint(w, "\t-")
				}
				fmt.Fprintln(w)
			}
			return w.Flush()
		},
	}
	ls.Flags().StringVar(&state, "state", "", "only runs in this state type (COMPLETED, FAILED, ...)")
	ls.Flags().StringVar(&tag, "tag", "", "only runs with this tag")
	ls.Flags().StringVar(&deployment, "deployment", "", "only runs of this deployment (name or id)")
	ls.Flags().StringVar(&name, "name", "", "only runs whose name contains this")
	ls.Flags().StringVar(&queue, "work-queue", "", "only runs on this work queue")
	ls.Flags().IntVar(&limit, "limit", 50, "how many runs")
	ls.Flags().BoolVar(&upcoming, "upcoming", false, "list the runs scheduled for later instead, soonest first")
	ls.Flags().StringVar(&metric, "metric", "", "show this metric of each run as a column")
	c.register(ls)

	show := &cobra.Command{
		Use:   "show RUN",
		Short: "Show one run with its task runs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			run, err := getRun(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "run %s (%s) of %s on %s: %s %s\n", run.Name, run.ID, run.DeploymentName, run.WorkQueue, stateLabel(run.State), run.State.Message)
			params, _ := json.Marshal(run.Parameters)
			fmt.Fprintf(out, "parameters: %s\n", params)
			if len(run.Result) > 0 && string(run.Result) != "null" {
				fmt.Fprintf(out, "result: %s\n", run.Result)
			}
			if len(run.Metrics) > 0 {
				fmt.Fprintf(out, "metrics: %s\n", formatMetrics(run.Metrics))
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TASK\tSTATE\tATTEMPTS\tDEPENDS ON\tMETRICS\tMESSAGE")
			var outputs int
			for _, t := range run.TaskRuns {
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\n", t.TaskName, stateLabel(t.State), t.RunCount, strings.Join(t.DependsOn, ","), formatMetrics(t.Metrics), t.State.Message)
				outputs += len(t.Outputs)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if outputs > 0 {
				fmt.Fprintln(out, "outputs:")
				w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				for _, t := range run.TaskRuns {
					for _, o := range t.Outputs {
						fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", t.TaskName, o.Name, byteSize(o.Size), o.MediaType)
					}
				}
				if err := w.Flush(); err != nil {
					return err
				}
			}
			return printRunFirings(cmd, c, run.ID)
		},
	}
	c.register(show)

	cancel := &cobra.Command{
		Use:   "cancel RUN",
		Short: "Cancel a run: running task processes are killed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := c.api().RunCancel(cmd.Context(), args[0], nil)
			if _, err := check(c, resp, err, client.ParseRunCancelResponse); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "run %s is being cancelled\n", args[0])
			return nil
		},
	}
	c.register(cancel)

	retry := &cobra.Command{
		Use:   "retry RUN",
		Short: "Run the failed part of a finished run again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := c.api().RunRetry(cmd.Context(), args[0], nil)
			if _, err := check(c, resp, err, client.ParseRunRetryResponse); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "run %s is retried\n", args[0])
			return nil
		},
	}
	c.register(retry)

	logs := newLogsCommand(c)
	c.register(logs)
	outputs := newRunOutputsCommand(c)
	c.register(outputs)
	cmd.AddCommand(ls, show, cancel, retry, logs, outputs)
	return cmd
}
