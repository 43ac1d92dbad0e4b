package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/client"
)

// eventJSON is what the commands print of an event (--json), in this
// order of members.
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

type stateJSON struct {
	Type      client.StateType `json:"type"`
	Name      string           `json:"name"`
	Timestamp time.Time        `json:"timestamp"`
	Message   string           `json:"message"`
}

func (s *stateJSON) label() string { return stateLabel(client.State{Type: s.Type, Name: s.Name}) }

func toStateJSON(s *client.State) *stateJSON {
	if s == nil {
		return nil
	}
	return &stateJSON{Type: s.Type, Name: s.Name, Timestamp: s.Timestamp, Message: s.Message}
}

func toEventJSON(e client.Event) eventJSON {
	out := eventJSON{
		Position: int64(e.Position), Cursor: e.Cursor, StreamID: e.StreamID, StreamType: string(e.StreamType),
		Version: int64(e.Version), Type: e.Type, Data: e.Data, RecordedAt: e.RecordedAt,
		FlowRunID: e.FlowRunID, FlowRunName: e.FlowRunName, TaskName: e.TaskName,
		FromState: toStateJSON(e.FromState), ToState: toStateJSON(e.ToState),
	}
	out.Metadata.Actor, out.Metadata.Reason = e.Metadata.Actor, e.Metadata.Reason
	return out
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
			from = e.FromState.label()
		}
		transition = from + " -> " + e.ToState.label()
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
				n := min(limit-printed, 200)
				params := &client.EventListParams{After: opt(after), Limit: &n}
				if len(types) > 0 {
					params.Type = &types
				}
				resp, err := c.api().EventList(cmd.Context(), params)
				page, err := read(c, resp, err, client.ParseEventListResponse, (*client.EventListResponse).GetJSON200)
				if err != nil {
					return err
				}
				for _, e := range page.Items {
					printEvent(tw, toEventJSON(e), asJSON)
					after = e.Cursor
					printed++
				}
				tw.Flush()
				// A short page is not always the end of what is readable: a
				// transaction of another database that ended while the server
				// looked can cut a page short. Without --follow, the read ends
				// at an empty page (or the limit), one request later.
				if !follow && (printed >= limit || len(page.Items) == 0) {
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
				resp, err := c.api().RunEvents(cmd.Context(), args[0])
				page, err := read(c, resp, err, client.ParseRunEventsResponse, (*client.RunEventsResponse).GetJSON200)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "POSITION\tRECORDED\tSTREAM\tEVENT\tTRANSITION\tACTOR\tREASON")
				for _, e := range page.Items {
					printEvent(tw, toEventJSON(e), asJSON)
				}
				return tw.Flush()
			}
			resp, err := c.api().RunHistory(cmd.Context(), args[0], &client.RunHistoryParams{At: at})
			r, err := check(c, resp, err, client.ParseRunHistoryResponse)
			if err != nil {
				return err
			}
			var raw struct{ Run json.RawMessage } // the run as the server sent it
			if err := json.Unmarshal(r.Body, &raw); err != nil || r.JSON200 == nil {
				return fmt.Errorf("decode the answer to %s: %s without a JSON body", what(resp), r.Status())
			}
			if asJSON {
				fmt.Fprintln(out, string(raw.Run))
				return nil
			}
			h := r.JSON200
			run := h.Run
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
