package main

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// The CLI against a real server: what a user reads when the API refuses a
// request, and what the commands show of the API's answers.

const cliDeployment = `
name: cli-pipeline
work_queue: cli
parameters: {table: houses, test_size: 0.2, n_estimators: 200}
parameters_schema:
  type: object
  properties:
    test_size: {type: number, exclusiveMinimum: 0, exclusiveMaximum: 1}
flow:
  name: cli
  tasks:
    - name: load_data
      command: [sh, -c, 'echo loading']
    - name: train
      command: [sh, -c, 'echo training']
      depends_on: [load_data]
`

func TestCLIAgainstTheAPI(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	c.ordo("deploy", "-f", c.writeFile("deployment.yaml", cliDeployment))
	run := runIDIn(t, c.ordo("run", "cli-pipeline", "--name", "cli-run-1"))

	// Each error says its message once: the server's message already holds
	// its details.
	t.Run("ErrorsSayTheirMessageOnce", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"run", "cli-pipeline", "-p", "test_size=2"}, "parameters.test_size: exclusiveMaximum: got 2, want 1"},
			{[]string{"runs", "ls", "--state", "FINISHED"}, `state: unknown state type "FINISHED"`},
			{[]string{"history", run, "--at", "14:47:53"}, `at: must be an RFC 3339 time`},
		} {
			out, code := c.ordoCode(tc.args...)
			if code != 2 || strings.Count(out, tc.want) != 1 {
				t.Errorf("ordo %s: exit %d, want exit 2 and %q exactly once:\n%s", strings.Join(tc.args, " "), code, tc.want, out)
			}
		}
	})

	// The STREAM column names the run and the task, the TRANSITION column
	// the states; the log is read gap-free, so the newest events may show
	// a moment later.
	t.Run("EventsNameTheRunTheTaskAndTheTransition", func(t *testing.T) {
		want := []*regexp.Regexp{
			regexp.MustCompile(`flow_run cli-run-1\s+FlowRunCreated\s+\(new\) -> SCHEDULED`),
			regexp.MustCompile(`task_run load_data of run cli-run-1\s+TaskRunCreated\s+\(new\) -> PENDING`),
			regexp.MustCompile(`task_run train of run cli-run-1\s+TaskRunCreated\s+\(new\) -> PENDING`),
		}
		var out string
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			out = c.ordo("events")
			missing := 0
			for _, re := range want {
				if !re.MatchString(out) {
					missing++
				}
			}
			if missing == 0 {
				break
			}
			if time.Now().After(deadline) {
				for _, re := range want {
					if !re.MatchString(out) {
						t.Errorf("ordo events shows no line like %s", re)
					}
				}
				t.Fatalf("ordo events:\n%s", out)
			}
		}
		if strings.Contains(out, "\ttask_run\t") || regexp.MustCompile(`task_run\s+TaskRun`).MatchString(out) {
			t.Errorf("a task run's event without its task:\n%s", out)
		}
	})
}
