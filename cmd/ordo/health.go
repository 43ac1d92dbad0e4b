package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newHealthCommand() *cobra.Command {
	var apiURL string
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Exit 0 when the server at --api-url is ready (for container healthchecks)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := &apiClient{base: apiURL, http: &http.Client{Timeout: 5 * time.Second}}
			resp, err := c.api().Ready(cmd.Context())
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("not ready: %s %s", resp.Status, strings.TrimSpace(string(body)))
			}
			fmt.Fprintln(cmd.OutOrStdout(), "ready")
			return nil
		},
	}
	cmd.Flags().StringVar(&apiURL, "api-url", "http://127.0.0.1:4200", flagHelp("api-url", "the Ordo server to ask"))
	return cmd
}
