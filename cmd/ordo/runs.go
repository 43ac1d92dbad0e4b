package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/domain"
)

// The API's shapes, as far as the commands print them.
type (
	stateJSON struct {
		Type      domain.StateType `json:"type"`
		Name      string           `json:"name"`
		Timestamp time.Time        `json:"timestamp"`
		Message   string           `json:"message"`
	}
	taskRunJSON struct {
		ID        string          `json:"id"`
		TaskName  string          `json:"task_name"`
		State     stateJSON       `json:"state"`
		RunCount  int             `json:"run_count"`
		StartedAt *time.Time      `json:"started_at"`
		EndedAt   *time.Time      `json:"ended_at"`
		Result    json.RawMessage `json:"result"`
		Error     *string         `json:"error"`
		DependsOn []string        `json:"depends_on"`
	}
	runJSON struct {
		ID             string          `json:"id"`
		Name           string          `json:"name"`
		DeploymentName string          `json:"deployment_name"`
		WorkQueue      string          `json:"work_queue"`
		Tags           []string        `json:"tags"`
		Parameters     map[string]any  `json:"parameters"`
		State          stateJSON       `json:"state"`
		ScheduledAt    time.Time       `json:"scheduled_at"`
		StartedAt      *time.Time      `json:"started_at"`
		EndedAt        *time.Time      `json:"ended_at"`
		Result         json.RawMessage `json:"result"`
		TaskRuns       []taskRunJSON   `json:"task_runs"`
	}
	deploymentJSON struct {
		ID        string `json:"id"`
		Name      string `json:"name"`
		Version   int    `json:"version"`
		WorkQueue string `json:"work_queue"`
		Paused    bool   `json:"paused"`
		NextRuns  []struct {
			ID          string    `json:"id"`
			ScheduledAt time.Time `json:"scheduled_at"`
		} `json:"next_runs"`
	}
	listJSON[T any] struct {
		Items      []T     `json:"items"`
		NextCursor *string `json:"next_cursor"`
	}
)

func newDeployCommand() *cobra.Command {
	c := newAPIClient()
	var file string
	cmd := &cobra.Command{
		Use:   "deploy -f FILE",
		Short: "Create or update a deployment from a YAML or JSON file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, err := readInput(cmd, file)
			if err != nil {
				return err
			}
			// validated here first, so that problems are named before anything is sent
			spec, err := domain.ParseDeploymentAuto(data)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			var d deploymentJSON
			if err := c.do(cmd.Context(), "POST", "/deployments", spec, &d); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deployment %s version %d (id %s) on work queue %s\n", d.Name, d.Version, d.ID, d.WorkQueue)
			for _, r := range d.NextRuns {
				fmt.Fprintf(cmd.OutOrStdout(), "  next run %s at %s\n", r.ID, r.ScheduledAt.Local().Format(time.DateTime))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "deployment file, YAML or JSON (- for standard input)")
	_ = cmd.MarkFlagRequired("file")
	c.register(cmd)
	return cmd
}

func readInput(cmd *cobra.Command, file string) ([]byte, error) {
	if file == "-" {
		return io.ReadAll(cmd.InOrStdin())
	}
	return os.ReadFile(file)
}

// findDeployment reads a deployment by its name or id: the API takes
// either.
func findDeployment(ctx context.Context, c *apiClient, nameOrID string) (deploymentJSON, error) {
	var d deploymentJSON
	err := c.do(ctx, "GET", "/deployments/"+url.PathEscape(nameOrID), nil, &d)
	return d, err
}

// runPath is the API path of RUN, a run's id or its name as `ordo run` and
// `runs ls` print it: the API resolves a name, and refuses one that several
// runs carry with their ids.
func runPath(nameOrID string) string { return "/runs/" + url.PathEscape(nameOrID) }

// findRun resolves RUN to the run's id, for commands that make several
// requests about one run.
func findRun(ctx context.Context, c *apiClient, nameOrID string) (string, error) {
	if _, err := uuid.Parse(nameOrID); err == nil {
		return nameOrID, nil
	}
	var run runJSON
	if err := c.do(ctx, "GET", runPath(nameOrID), nil, &run); err != nil {
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
			var run runJSON
			body := map[string]any{"parameters": overrides}
			if key != "" {
				body["idempotency_key"] = key
			}
			if name != "" {
				body["name"] = name
			}
			if err := c.do(cmd.Context(), "POST", "/deployments/"+d.ID+"/runs", body, &run); err != nil {
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
		var run runJSON
		if err := c.do(ctx, "GET", "/runs/"+id, nil, &run); err != nil {
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
		if progress := watchProgress(run, time.Now()); progress != lastProgress {
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
			switch run.State.Type {
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
func watchProgress(run runJSON, now time.Time) string {
	label := stateLabel(run.State)
	if run.State.Type == domain.Scheduled {
		if run.ScheduledAt.After(now) {
			label += ", due at " + run.ScheduledAt.Local().Format(time.TimeOnly)
		} else {
			label += ", due: waiting for a worker on queue " + run.WorkQueue
		}
	}
	counts := map[domain.StateType]int{}
	done := 0
	for _, t := range run.TaskRuns {
		counts[t.State.Type]++
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

func stateLabel(s stateJSON) string {
	if s.Name == "" || strings.EqualFold(s.Name, string(s.Type)) {
		return string(s.Type)
	}
	return fmt.Sprintf("%s (%s)", s.Type, s.Name)
}

func newRunsCommand() *cobra.Command {
	c := newAPIClient()
	cmd := &cobra.Command{Use: "runs", Short: "List, inspect and cancel flow runs",
		Long: "List, inspect, cancel and retry flow runs. RUN is a run's id or its name, as `ordo run` and `ordo runs ls` print them."}

	var state, tag, deployment, name, queue string
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
			var page listJSON[runJSON]
			q := query("state", strings.ToUpper(state), "tag", tag, "deployment", deployment, "name", name, "work_queue", queue, "limit", fmt.Sprint(limit),
				"upcoming", map[bool]string{true: "true"}[upcoming])
			if err := c.do(cmd.Context(), "GET", "/runs"+q, nil, &page); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tNAME\tDEPLOYMENT\tQUEUE\tSTATE\tSCHEDULED\tTAGS")
			for _, r := range page.Items {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Name, r.DeploymentName, r.WorkQueue, stateLabel(r.State),
					r.ScheduledAt.Local().Format(time.DateTime), strings.Join(r.Tags, ","))
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
	c.register(ls)

	show := &cobra.Command{
		Use:   "show RUN",
		Short: "Show one run with its task runs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var run runJSON
			if err := c.do(cmd.Context(), "GET", runPath(args[0]), nil, &run); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "run %s (%s) of %s on %s: %s %s\n", run.Name, run.ID, run.DeploymentName, run.WorkQueue, stateLabel(run.State), run.State.Message)
			params, _ := json.Marshal(run.Parameters)
			fmt.Fprintf(out, "parameters: %s\n", params)
			if len(run.Result) > 0 && string(run.Result) != "null" {
				fmt.Fprintf(out, "result: %s\n", run.Result)
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TASK\tSTATE\tATTEMPTS\tDEPENDS ON\tMESSAGE")
			for _, t := range run.TaskRuns {
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", t.TaskName, stateLabel(t.State), t.RunCount, strings.Join(t.DependsOn, ","), t.State.Message)
			}
			return w.Flush()
		},
	}
	c.register(show)

	cancel := &cobra.Command{
		Use:   "cancel RUN",
		Short: "Cancel a run: running task processes are killed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.do(cmd.Context(), "POST", runPath(args[0])+"/cancel", struct{}{}, nil); err != nil {
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
			if err := c.do(cmd.Context(), "POST", runPath(args[0])+"/retry", struct{}{}, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "run %s is retried\n", args[0])
			return nil
		},
	}
	c.register(retry)

	logs := newLogsCommand(c)
	c.register(logs)
	cmd.AddCommand(ls, show, cancel, retry, logs)
	return cmd
}
