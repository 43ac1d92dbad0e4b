package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/domain"
)

// apiClient talks to an Ordo server's HTTP API for the client commands.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func newAPIClient() *apiClient {
	return &apiClient{http: &http.Client{Timeout: 60 * time.Second}}
}

// register adds --api-url and --api-token to a client command.
func (c *apiClient) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.base, "api-url", "http://127.0.0.1:4200", flagHelp("api-url", "the Ordo server's URL"))
	cmd.Flags().StringVar(&c.token, "api-token", "", flagHelp("api-token", "API token, sent as Authorization: Bearer"))
}

// apiError is the server's error envelope.
type apiError struct {
	Error struct {
		Code    domain.Code     `json:"code"`
		Message string          `json:"message"`
		Details []domain.Detail `json:"details"`
	} `json:"error"`
}

// do sends a request with an optional JSON body and decodes a JSON answer
// into out. Error answers become *domain.Error with the server's code.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.base, "/")+"/api/v1"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reach the Ordo server at %s (is `ordo server` or `ordo dev` running? set --api-url or ORDO_API_URL): %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e apiError
		if json.Unmarshal(data, &e) == nil && e.Error.Code != "" {
			// The message is the whole error, its details included
			// (api/errors.go); keeping the details here too would print
			// them twice.
			return &domain.Error{Code: e.Error.Code, Message: e.Error.Message}
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode the answer to %s %s: %w", method, path, err)
		}
	}
	return nil
}

// query builds a query string from pairs, leaving out empty values.
func query(pairs ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] != "" {
			v.Add(pairs[i], pairs[i+1])
		}
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}
