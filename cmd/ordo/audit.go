package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// eventJSON is an event as the API shows it.
type eventJSON struct {
	Position   int64           `json:"position"`
	Cursor     string          `json:"cursor"`
	StreamID   string          `json:"stream_id"`
	StreamType string          `json:"stream_type"`
	Version    int64           `json:"version"`
	Type       string          `json:"type"`
	Data       json.RawMessage `json:"data"`
	Metadata   struct {
		Actor  string `json:"actor"`
		Reason string `json:"reason"`
	} `json:"metadata"`
	RecordedAt  time.Time  `json:"recorded_at"`
	FlowRunID   string     `json:"flow_run_id,omitempty"`
	FlowRunName string     `json:"flow_run_name,omitempty"`
	TaskName    string     `json:"task_name,omitempty"`
	FromState   *stateJSON `json:"from_state,omitempty"`
	ToState     *stateJSON `json:"to_state,omitempty"`
}

// streamLabel names what an event is about: "task_run load_data of run
// hello-13e2af11", "flow_run hello-13e2af11".
func streamLabel(e eventJSON) string {
	what := e.StreamType
	if e.TaskName != "" {
		what += " " + e.TaskName
		if e.FlowRunName != "" {
			what += " of run " + e.FlowRunName
		}
	} else if e.FlowRunName != "" {
		what += " " + e.FlowRunName
	}
	return what
}

func printEvent(w io.Writer, e eventJSON, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(e)
		fmt.Fprintln(w, string(b))
		return
	}
	transition := ""
	if e.ToState != nil {
		from := "(new)"
		if e.FromState != nil {
			from = stateLabel(*e.FromState)
		}
		transition = from + " -> " + stateLabel(*e.ToState)
	}
	fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Position, e.RecordedAt.Local().Format("2006-01-02 15:04:05.000"), streamLabel(e), e.Type, transition, e.Metadata.Actor, e.Metadata.Reason)
}

func newEventsCommand() *cobra.Command {
	c := newAPIClient()
	var (
		after  string
		types  []string
		follow bool
		asJSON bool
		limit  int
	)
	cmd := &cobra.Command{
		Use:   "events [--after CURSOR] [--type TYPE]... [--follow]",
		Short: "Print the global event log, oldest first",
		Long: `Print the global event log: every state change of every deployment, flow
run and task run, in order. --after takes a cursor (or position) printed
before; --follow keeps printing new events as they are recorded.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			if !asJSON {
				fmt.Fprintln(tw, "POSITION\tRECORDED\tSTREAM\tEVENT\tTRANSITION\tACTOR\tREASON")
			}
			printed := 0
			for {
				q := query("after", after, "limit", fmt.Sprint(min(limit-printed, 200)))
				for _, t := range types {
					q += "&type=" + t
				}
				if q != "" && q[0] == '&' {
					q = "?" + q[1:]
				}
				var page listJSON[eventJSON]
				if err := c.do(cmd.Context(), "GET", "/events"+q, nil, &page); err != nil {
					return err
				}
				for _, e := range page.Items {
					printEvent(tw, e, asJSON)
					after = e.Cursor
					printed++
				}
				tw.Flush()
				if !follow && (printed >= limit || page.NextCursor == nil || len(page.Items) == 0) {
					return nil
				}
				if follow && len(page.Items) == 0 {
					select {
					case <-cmd.Context().Done():
						return nil
					case <-time.After(500 * time.Millisecond):
					}
				}
				if follow {
					printed = 0
				}
			}
		},
	}
	cmd.Flags().StringVar(&after, "after", "", "start after this cursor or position")
	cmd.Flags().StringSliceVar(&types, "type", nil, "only events of these types (repeatable)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each event as one JSON line")
	cmd.Flags().IntVar(&limit, "limit", 1000, "most events to print (without --follow)")
	c.register(cmd)
	return cmd
}

func newHistoryCommand() *cobra.Command {
	c := newAPIClient()
	var at string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "history RUN [--at TIME|POSITION]",
		Short: "Show a run as it was at a past time or log position, rebuilt from its events",
		Long: `Show a run and its task runs exactly as they were at a past moment: --at
takes a time (RFC 3339, like 2026-05-01T10:05:00Z) or a log position from
'ordo events' or the audit trail. Without --at it prints the run's audit
trail. RUN is a run's id or its name.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			if at == "" {
				var page struct {
					Items []eventJSON `json:"items"`
				}
				if err := c.do(cmd.Context(), "GET", runPath(args[0])+"/events", nil, &page); err != nil {
					return err
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "POSITION\tRECORDED\tSTREAM\tEVENT\tTRANSITION\tACTOR\tREASON")
				for _, e := range page.Items {
					printEvent(tw, e, asJSON)
				}
				return tw.Flush()
			}
			var h struct {
				At         time.Time       `json:"at"`
				Position   int64           `json:"position"`
				EventCount int             `json:"event_count"`
				Run        json.RawMessage `json:"run"`
			}
			if err := c.do(cmd.Context(), "GET", runPath(args[0])+"/history"+query("at", at), nil, &h); err != nil {
				return err
			}
			if asJSON {
				fmt.Fprintln(out, string(h.Run))
				return nil
			}
			var run runJSON
			if err := json.Unmarshal(h.Run, &run); err != nil {
				return err
			}
			fmt.Fprintf(out, "run %s as of position %d (%s), after %d events:\n", run.Name, h.Position, h.At.Local().Format(time.DateTime), h.EventCount)
			fmt.Fprintf(out, "  state %s %s\n", stateLabel(run.State), run.State.Message)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "  TASK\tSTATE\tATTEMPTS\tDEPENDS ON")
			for _, t := range run.TaskRuns {
				fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\n", t.TaskName, stateLabel(t.State), t.RunCount, strings.Join(t.DependsOn, ","))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&at, "at", "", "a time (RFC 3339) or a log position")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.register(cmd)
	return cmd
}
