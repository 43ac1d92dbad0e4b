package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/client"
)

func printLogLine(w io.Writer, l client.LogLine) {
	fmt.Fprintf(w, "%s  %-16s #%d %-6s %s\n", l.Timestamp.Local().Format("15:04:05.000"), l.TaskName, l.Attempt, l.Stream, l.Message)
}

func newLogsCommand(c *apiClient) *cobra.Command {
	var (
		task   string
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "logs RUN [-f] [--task NAME]",
		Short: "Print a run's logs; -f follows them live until the run ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			id, err := findRun(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			if follow {
				return followLogs(cmd.Context(), c, id, task, out)
			}
			var after *int
			for {
				resp, err := c.api().RunLogs(cmd.Context(), id, &client.RunLogsParams{Task: opt(task), After: after, Limit: opt(5000)})
				page, err := read(c, resp, err, client.ParseRunLogsResponse, (*client.RunLogsResponse).GetJSON200)
				if err != nil {
					return err
				}
				for _, l := range page.Items {
					printLogLine(out, l)
					after = &l.ID
				}
				if page.NextCursor == nil || len(page.Items) == 0 {
					return nil
				}
			}
		},
	}
	cmd.Flags().StringVar(&task, "task", "", "only this task's lines")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "stream new lines until the run ends")
	return cmd
}

// followLogs reads the Server-Sent Events stream of a run's logs.
func followLogs(ctx context.Context, c *apiClient, runID, task string, out io.Writer) error {
	accept := func(_ context.Context, req *http.Request) error {
		req.Header.Set("Accept", "text/event-stream")
		return nil
	}
	// no timeout: the stream lasts as long as the run
	resp, err := c.api(&http.Client{}).RunLogs(ctx, runID, &client.RunLogsParams{Follow: opt(true), Task: opt(task)}, accept)
	if err != nil {
		return fmt.Errorf("reach the Ordo server at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e client.Error
		body, _ := io.ReadAll(resp.Body)
		if json.Unmarshal(body, &e) == nil && e.Error.Code != "" {
			return fmt.Errorf("%s: %s", e.Error.Code, e.Error.Message)
		}
		return fmt.Errorf("follow logs: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
			if event == "end" {
				return nil
			}
		case strings.HasPrefix(line, "data:"):
			data := strings.TrimSpace(strings.TrimPrefix(line, "data:"))
			switch event {
			case "log":
				var l client.LogLine
				if err := json.Unmarshal([]byte(data), &l); err != nil {
					return fmt.Errorf("a log event the client does not understand: %w", err)
				}
				printLogLine(out, l)
			case "error":
				return fmt.Errorf("the server ended the log stream: %s", data)
			}
		case line == "":
			event = ""
		}
	}
	return sc.Err()
}
