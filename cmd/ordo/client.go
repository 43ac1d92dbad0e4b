package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/client"
	"github.com/ordoflow/ordo/domain"
)

// apiClient talks to an Ordo server's HTTP API for the client commands,
// through the client generated from the API's document.
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

// api is the generated client on --api-url with the token; doer sends its
// requests (c.http unless it is given).
func (c *apiClient) api(doer ...client.HttpRequestDoer) *client.Client {
	api := &client.Client{Server: strings.TrimRight(c.base, "/") + "/", Client: c.http}
	if len(doer) > 0 {
		api.Client = doer[0]
	}
	if c.token != "" {
		api.RequestEditors = []client.RequestEditorFn{func(_ context.Context, req *http.Request) error {
			req.Header.Set("Authorization", "Bearer "+c.token)
			return nil
		}}
	}
	return api
}

// answer is what every generated response has.
type answer interface {
	StatusCode() int
	Status() string
	GetJSONDefault() *client.Error
}

// read checks the answer of a request sent with c.api(): a network error, a
// body that does not decode and an error answer become errors, the error
// envelope a *domain.Error with the server's code. body picks the value of
// a successful answer.
func read[R answer, T any](c *apiClient, resp *http.Response, err error, parse func(*http.Response) (R, error), body func(R) *T) (*T, error) {
	r, err := check(c, resp, err, parse)
	if err != nil {
		return nil, err
	}
	v := body(r)
	if v == nil {
		return nil, fmt.Errorf("decode the answer to %s: %s without a JSON body", what(resp), r.Status())
	}
	return v, nil
}

// check is read for an answer whose body does not matter.
func check[R answer](c *apiClient, resp *http.Response, err error, parse func(*http.Response) (R, error)) (R, error) {
	var zero R
	if err != nil {
		return zero, fmt.Errorf("reach the Ordo server at %s (is `ordo server` or `ordo dev` running? set --api-url or ORDO_API_URL): %w", c.base, err)
	}
	r, err := parse(resp)
	if err != nil {
		return zero, fmt.Errorf("decode the answer to %s: %w", what(resp), err)
	}
	if r.StatusCode() >= 300 {
		if e := r.GetJSONDefault(); e != nil && e.Error.Code != "" {
			// The message is the whole error, its details included
			// (api/errors.go); keeping the details here too would print
			// them twice.
			return zero, &domain.Error{Code: domain.Code(e.Error.Code), Message: e.Error.Message}
		}
		return zero, fmt.Errorf("%s: %s", what(resp), r.Status())
	}
	return r, nil
}

// what names a request in errors: its method and its path below /api/v1.
func what(resp *http.Response) string {
	u := resp.Request.URL.RequestURI()
	if i := strings.Index(u, "/api/v1/"); i >= 0 {
		u = u[i+len("/api/v1"):]
	}
	return resp.Request.Method + " " + u
}

// opt is v as an optional parameter: nil when it is the zero value.
func opt[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}
