package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/client"
	"github.com/ordoflow/ordo/domain"
)

func newAutomationsCommand() *cobra.Command {
	c := newAPIClient()
	cmd := &cobra.Command{Use: "automations", Short: "Manage automations: what fires when runs reach a state, and where it is delivered",
		Long: `Manage automations. An automation is a trigger (a flow run or task run
reaching a state; a run RUNNING longer than some seconds; a deployment with no
completed run for some seconds; a run not started some seconds after it was
due; some flow runs of a deployment failing in a row), a filter (deployments by glob, tags, work queue, flow) and
actions (a webhook that gets a signed CloudEvents 1.0 JSON body, a Slack
message, an email, cancelling the run, pausing its deployment or starting a
run of a deployment). AUTOMATION is an automation's id or its name.`}

	ls := &cobra.Command{Use: "ls", Short: "List automations", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := c.api().AutomationList(cmd.Context())
			page, err := read(c, resp, err, client.ParseAutomationListResponse, (*client.AutomationListResponse).GetJSON200)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tNAME\tTRIGGER\tACTIONS\tPAUSED")
			for _, a := range page.Items {
				actions := make([]string, len(a.Actions))
				for i, x := range a.Actions {
					actions[i] = strings.TrimSpace(string(x.Type) + " " + x.URL + x.Deployment + strings.Join(x.To, ","))
				}
				trigger := strings.Join(slices.DeleteFunc([]string{string(a.Trigger.Type), string(a.Trigger.Of), strings.Join(a.Trigger.States, ",")}, func(s string) bool { return s == "" }), " ")
				if a.Trigger.Seconds > 0 {
					trigger += " " + (time.Duration(a.Trigger.Seconds) * time.Second).String()
				}
				if a.Trigger.Count > 0 {
					trigger += fmt.Sprintf(" %d in a row", a.Trigger.Count)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%t\n", a.ID, a.Name, trigger, strings.Join(actions, "; "), a.Paused)
			}
			return w.Flush()
		}}
	c.register(ls)

	var file string
	create := &cobra.Command{Use: "create -f FILE", Short: "Create an automation from a YAML or JSON file, or change the one with its name",
		Example: `  ordo automations create -f failures.yaml

  # failures.yaml
  name: ml failures to ops
  trigger: {type: state, of: flow_run, states: [FAILED, CRASHED]}
  filter: {deployments: ["model_*"], tags: [prod]}
  actions:
    - {type: webhook, url: "https://hooks.example.com/ordo", secret_env: ORDO_HOOK_SECRET}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, err := automationFile(file)
			if err != nil {
				return err
			}
			var spec struct {
				Name string `json:"name"`
			}
			_ = json.Unmarshal(body, &spec)
			resp, err := c.api().AutomationCreateWithBody(cmd.Context(), nil, "application/json", bytes.NewReader(body))
			a, err := read(c, resp, err, client.ParseAutomationCreateResponse, (*client.AutomationCreateResponse).GetJSON201)
			verb := "created"
			if domain.ErrorCode(err) == domain.CodeConflict && spec.Name != "" {
				resp, err := c.api().AutomationUpdateWithBody(cmd.Context(), spec.Name, "application/json", bytes.NewReader(body))
				a, err = read(c, resp, err, client.ParseAutomationUpdateResponse, (*client.AutomationUpdateResponse).GetJSON200)
				verb = "saved"
				if err != nil {
					return err
				}
			} else if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "automation %s (%s) %s, version %d\n", a.Name, a.ID, verb, a.Version)
			return nil
		}}
	create.Flags().StringVarP(&file, "file", "f", "", "the automation's YAML or JSON file")
	_ = create.MarkFlagRequired("file")
	c.register(create)

	show := &cobra.Command{Use: "show AUTOMATION", Short: "Show one automation as JSON", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := c.api().AutomationGet(cmd.Context(), args[0])
			a, err := read(c, resp, err, client.ParseAutomationGetResponse, (*client.AutomationGetResponse).GetJSON200)
			if err != nil {
				return err
			}
			return printIndented(cmd, a)
		}}
	c.register(show)

	pause := automationSwitch(c, "pause", "Stop an automation firing", "paused", func(cmd *cobra.Command, ref string) (*http.Response, error) {
		return c.api().AutomationPause(cmd.Context(), ref, nil)
	}, client.ParseAutomationPauseResponse, (*client.AutomationPauseResponse).GetJSON200)
	resume := automationSwitch(c, "resume", "Let an automation fire again, for events from now on", "resumed", func(cmd *cobra.Command, ref string) (*http.Response, error) {
		return c.api().AutomationResume(cmd.Context(), ref, nil)
	}, client.ParseAutomationResumeResponse, (*client.AutomationResumeResponse).GetJSON200)

	rm := &cobra.Command{Use: "rm AUTOMATION", Short: "Delete an automation; its deliveries stay", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := c.api().AutomationDelete(cmd.Context(), args[0])
			if _, err := check(c, resp, err, client.ParseAutomationDeleteResponse); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "automation %s deleted\n", args[0])
			return nil
		}}
	c.register(rm)

	test := &cobra.Command{Use: "test AUTOMATION", Short: "Fire an automation now with a synthetic event, delivered like any other", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := c.api().AutomationTest(cmd.Context(), args[0], nil)
			f, err := read(c, resp, err, client.ParseAutomationTestResponse, (*client.AutomationTestResponse).GetJSON202)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "fired: firing %s (see `ordo automations deliveries %s`)\n", f.FiringID, args[0])
			return nil
		}}
	c.register(test)

	var limit int
	deliveries := &cobra.Command{Use: "deliveries AUTOMATION", Short: "List an automation's latest deliveries, newest first", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := c.api().AutomationDeliveries(cmd.Context(), args[0], &client.AutomationDeliveriesParams{Limit: &limit})
			page, err := read(c, resp, err, client.ParseAutomationDeliveriesResponse, (*client.AutomationDeliveriesResponse).GetJSON200)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "FIRING\tRUN\tTRIGGER\tTARGET\tSTATUS\tATTEMPTS\tLAST CODE\tLAST ERROR\tCREATED")
			for _, d := range page.Items {
				code, errText, run := "-", "", "-"
				if d.LastStatusCode != nil {
					code = fmt.Sprint(*d.LastStatusCode)
				}
				if d.LastError != nil {
					errText = *d.LastError
				}
				if d.FlowRunID != nil {
					run = *d.FlowRunID
				}
				trigger := d.TriggerKind + " " + d.TriggerType
				if d.Window != nil && d.Window.DeploymentName != "" {
					trigger += " " + d.Window.DeploymentName
				}
				if d.Window != nil && !d.Window.Deadline.IsZero() {
					trigger += " since " + d.Window.Since.Local().Format(time.TimeOnly) + " deadline " + d.Window.Deadline.Local().Format(time.TimeOnly)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", d.FiringID, run, trigger, d.Target, d.Status, d.Attempts, code, errText, d.CreatedAt.Local().Format(time.DateTime))
			}
			return w.Flush()
		}}
	deliveries.Flags().IntVar(&limit, "limit", 100, "how many deliveries")
	c.register(deliveries)

	retry := &cobra.Command{Use: "retry AUTOMATION FIRING [ACTION]", Short: "Deliver a dead delivery again, with the same idempotency key and a fresh budget of attempts",
		Long: `Re-queue a dead delivery of an automation: FIRING is the firing's id (see
` + "`ordo automations deliveries`" + `), ACTION the index of its action (0, the default, for
the first). The receiver gets the same Ordo-Idempotency-Key as before.`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			action := 0
			if len(args) == 3 {
				n, err := strconv.Atoi(args[2])
				if err != nil || n < 0 {
					return fmt.Errorf("ACTION is an action's index (0, 1, ...), not %q", args[2])
				}
				action = n
			}
			resp, err := c.api().DeliveryRetry(cmd.Context(), args[0], args[1], action, nil)
			d, err := read(c, resp, err, client.ParseDeliveryRetryResponse, (*client.DeliveryRetryResponse).GetJSON202)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "delivery of firing %s to %s re-queued: %s after %d attempts\n", d.FiringID, d.Target, d.Status, d.Attempts)
			return nil
		}}
	c.register(retry)

	cmd.AddCommand(ls, create, show, pause, resume, rm, test, deliveries, retry)
	return cmd
}

// printRunFirings prints what fired for a run (`ordo runs show`); a server
// without automations has nothing to print.
func printRunFirings(cmd *cobra.Command, c *apiClient, runID string) error {
	resp, err := c.api().RunFirings(cmd.Context(), runID)
	page, err := read(c, resp, err, client.ParseRunFiringsResponse, (*client.RunFiringsResponse).GetJSON200)
	if code := domain.ErrorCode(err); code == "not_implemented" || code == domain.CodeNotFound {
		return nil
	}
	if err != nil || len(page.Items) == 0 {
		return err
	}
	out := cmd.OutOrStdout()
	fmt.Fprintln(out, "fired:")
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, f := range page.Items {
		for _, d := range f.Deliveries {
			code := "-"
			if d.LastStatusCode != nil {
				code = fmt.Sprint(*d.LastStatusCode)
			}
			fmt.Fprintf(w, "  %s\t%s\t%s %s\t%s\t%s\t%s\n", f.AutomationName, f.TriggerType, d.ActionType, d.Target, d.Status, code, f.FiringID)
		}
	}
	return w.Flush()
}

// automationSwitch is `ordo automations pause|resume AUTOMATION`.
func automationSwitch[R answer](c *apiClient, verb, short, done string, send func(*cobra.Command, string) (*http.Response, error),
	parse func(*http.Response) (R, error), body func(R) *client.Automation) *cobra.Command {
	cmd := &cobra.Command{Use: verb + " AUTOMATION", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := send(cmd, args[0])
			a, err := read(c, resp, err, parse, body)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "automation %s %s\n", a.Name, done)
			return nil
		}}
	c.register(cmd)
	return cmd
}

// automationFile reads an automation file as JSON: a JSON file as it is, a
// YAML one converted.
func automationFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if json.Valid(data) {
		return data, nil
	}
	var doc any
	if err := yaml.UnmarshalWithOptions(data, &doc, yaml.UseOrderedMap()); err != nil {
		return nil, fmt.Errorf("%s: invalid YAML: %s", path, yaml.FormatError(err, false, false))
	}
	js, err := yaml.MarshalWithOptions(doc, yaml.JSON())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(bytes.TrimSpace(js)) == 0 || js[0] != '{' {
		return nil, errors.New(path + ": an automation file holds one object")
	}
	return js, nil
}

func printIndented(cmd *cobra.Command, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(cmd.OutOrStdout(), string(b))
	return err
}
