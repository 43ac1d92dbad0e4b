// Package apicontract holds Ordo's HTTP traffic in tests to the API's OpenAPI
// document: Handler checks every request and response that passes through a
// handler, Proxy every one between a client and a server in another process,
// Transport every one a Go client in the test sends.
//
// A response must match the document for its status (an error its default
// response, the envelope), and its objects may carry no member the document
// leaves out: the check closes every object schema that lists properties, so
// a field a handler adds without documenting it fails the test; the served
// document itself stays open, so that clients accept fields added later. A
// request the document refuses must be refused by the server (4xx); a
// request it allows may still be refused for rules it cannot state.
//
// It is for tests only; it imports api for the document and is imported by
// no production code.
package apicontract

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/ordoflow/ordo/api"
)

// contract is the document, read once, with its object schemas closed.
type contract struct {
	router  routers.Router
	logLine *openapi3.Schema
}

var load = sync.OnceValues(func() (*contract, error) {
	data, err := api.OpenAPIJSON()
	if err != nil {
		return nil, err
	}
	doc, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("load the OpenAPI document: %w", err)
	}
	seen := map[*openapi3.Schema]bool{}
	for _, s := range doc.Components.Schemas {
		closeObjects(s, seen)
	}
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			if op.RequestBody != nil && op.RequestBody.Value != nil {
				for _, mt := range op.RequestBody.Value.Content {
					closeObjects(mt.Schema, seen)
				}
			}
			for _, r := range op.Responses.Map() {
				if r.Value != nil {
					for _, mt := range r.Value.Content {
						closeObjects(mt.Schema, seen)
					}
				}
			}
		}
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	logLine := doc.Components.Schemas["LogLine"]
	if logLine == nil || logLine.Value == nil {
		return nil, errors.New("the OpenAPI document has no LogLine schema")
	}
	return &contract{router: router, logLine: logLine.Value}, nil
})

// closeObjects forbids members a schema does not list, in every object
// schema with properties that says nothing of others.
func closeObjects(ref *openapi3.SchemaRef, seen map[*openapi3.Schema]bool) {
	if ref == nil || ref.Value == nil || seen[ref.Value] {
		return
	}
	s := ref.Value
	seen[s] = true
	if len(s.Properties) > 0 && s.AdditionalProperties.Has == nil && s.AdditionalProperties.Schema == nil {
		s.AdditionalProperties.Has = openapi3.Ptr(false)
	}
	for _, p := range s.Properties {
		closeObjects(p, seen)
	}
	closeObjects(s.Items, seen)
	closeObjects(s.AdditionalProperties.Schema, seen)
	for _, list := range []openapi3.SchemaRefs{s.AllOf, s.AnyOf, s.OneOf} {
		for _, r := range list {
			closeObjects(r, seen)
		}
	}
}

var options = &openapi3filter.Options{
	AuthenticationFunc:  openapi3filter.NoopAuthenticationFunc,
	SkipSettingDefaults: true, // the handler must see the request as sent
	MultiError:          true,
}

// Handler passes every request to next and fails t when the request or the
// response breaks the document. Paths the document does not name (the web
// UI, River's UI) pass unchecked.
func Handler(t testing.TB, next http.Handler) http.Handler {
	t.Helper()
	c := mustLoad(t)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqBody, err := readBody(&r.Body)
		if err != nil {
			next.ServeHTTP(w, r)
			return
		}
		in, reqErr, ok := c.checkRequest(r, reqBody)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		if rec.Header().Get(proxyError) != "" {
			return // the server did not answer
		}
		c.report(t, in, reqBody, reqErr, rec.status, rec.Header(), rec.body.Bytes())
	})
}

// Transport sends every request through base (http.DefaultTransport when
// nil) and checks it and its answer as Handler does, for a client of a
// server in another process. An event stream's body is passed on unchecked.
func Transport(t testing.TB, base http.RoundTripper) http.RoundTripper {
	t.Helper()
	c := mustLoad(t)
	if base == nil {
		base = http.DefaultTransport
	}
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		reqBody, err := readBody(&r.Body)
		if err != nil {
			return nil, err
		}
		in, reqErr, ok := c.checkRequest(r, reqBody)
		resp, err := base.RoundTrip(r)
		if err != nil || !ok {
			return resp, err
		}
		var body []byte
		if !isEventStream(resp.Header) {
			if body, err = readBody(&resp.Body); err != nil {
				return nil, err
			}
		}
		c.report(t, in, reqBody, reqErr, resp.StatusCode, resp.Header, body)
		return resp, nil
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func mustLoad(t testing.TB) *contract {
	t.Helper()
	c, err := load()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// readBody reads a request's or response's body and puts back a copy.
func readBody(body *io.ReadCloser) ([]byte, error) {
	if *body == nil || *body == http.NoBody {
		return nil, nil
	}
	b, err := io.ReadAll(*body)
	(*body).Close()
	*body = io.NopCloser(bytes.NewReader(b))
	return b, err
}

func isEventStream(h http.Header) bool {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return mt == "text/event-stream"
}

// checkRequest finds the operation of r and validates r (its body read into
// body); ok is false for a path or method the document does not have.
func (c *contract) checkRequest(r *http.Request, body []byte) (in *openapi3filter.RequestValidationInput, err error, ok bool) {
	route, params, err := c.router.FindRoute(r)
	if err != nil || r.Method == http.MethodHead {
		return nil, nil, false
	}
	check := r.Clone(context.WithoutCancel(r.Context()))
	check.Body = io.NopCloser(bytes.NewReader(body))
	in = &openapi3filter.RequestValidationInput{Request: check, PathParams: params, Route: route, Options: options}
	return in, openapi3filter.ValidateRequest(check.Context(), in), true
}

// report fails t when the document refuses a request the server did not
// refuse, or the answer breaks the document.
func (c *contract) report(t testing.TB, in *openapi3filter.RequestValidationInput, reqBody []byte, reqErr error, status int, header http.Header, body []byte) {
	what := fmt.Sprintf("%s %s", in.Request.Method, in.Request.URL.RequestURI())
	if reqErr != nil && (status < 400 || status >= 500) {
		t.Errorf("%s: the OpenAPI document refuses the request, but the server answered %d:\n%v\nrequest body: %s",
			what, status, reqErr, clip(reqBody))
	}
	if err := c.checkResponse(in, status, header, body); err != nil {
		t.Errorf("%s: the %d response breaks the OpenAPI document:\n%v\nresponse body: %s", what, status, err, clip(body))
	}
}

func (c *contract) checkResponse(in *openapi3filter.RequestValidationInput, status int, header http.Header, body []byte) error {
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header, Options: options}
	if isEventStream(header) {
		opts := *options
		opts.ExcludeResponseBody = true
		out.Options = &opts
		if err := openapi3filter.ValidateResponse(in.Request.Context(), out.SetBodyBytes(nil)); err != nil {
			return err
		}
		return c.checkLogEvents(body)
	}
	return openapi3filter.ValidateResponse(in.Request.Context(), out.SetBodyBytes(body))
}

// checkLogEvents checks the data of every log event of a Server-Sent Events
// stream against the LogLine schema.
func (c *contract) checkLogEvents(stream []byte) error {
	sc := bufio.NewScanner(bytes.NewReader(stream))
	sc.Buffer(nil, 16<<20)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			event = ""
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:") && event == "log":
			var v any
			data := strings.TrimSpace(strings.TrimPrefix(line, "data:"))
			if err := json.Unmarshal([]byte(data), &v); err != nil {
				return fmt.Errorf("log event %s: %w", data, err)
			}
			if err := c.logLine.VisitJSON(v, openapi3.MultiErrors()); err != nil {
				return fmt.Errorf("log event %s: %w", data, err)
			}
		}
	}
	return sc.Err()
}

// Proxy starts a server that forwards every request to target (a base URL
// such as http://127.0.0.1:4200) and checks it with Handler; it returns the
// proxy's base URL. It stops when the test ends.
func Proxy(t testing.TB, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1 // log streams reach the client line by line
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		w.Header().Set(proxyError, "1")
		http.Error(w, err.Error(), http.StatusBadGateway)
	}
	srv := httptest.NewServer(Handler(t, rp))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv.URL
}

// proxyError marks an answer of Proxy itself, when the server is gone.
const proxyError = "X-Apicontract-Proxy-Error"

// recorder passes a response on as it is written and keeps a copy.
type recorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	body        bytes.Buffer
}

func (r *recorder) WriteHeader(status int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = status, true
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Flush() {
	r.wroteHeader = true
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func clip(b []byte) string {
	if len(b) > 2000 {
		return string(b[:2000]) + "..."
	}
	return string(b)
}
