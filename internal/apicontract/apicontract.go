// Package apicontract holds Ordo's HTTP traffic in tests to the API's OpenAPI
// document: Handler checks every request and response that passes through a
// handler, Proxy every one between a client and a server in another process.
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
	c, err := load()
	if err != nil {
		t.Fatal(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route, params, err := c.router.FindRoute(r)
		if err != nil || r.Method == http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		var reqBody []byte
		if r.Body != nil && r.Body != http.NoBody {
			if reqBody, err = io.ReadAll(r.Body); err != nil {
				next.ServeHTTP(w, r)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(reqBody))
		}
		check := r.Clone(context.WithoutCancel(r.Context()))
		check.Body = io.NopCloser(bytes.NewReader(reqBody))
		in := &openapi3filter.RequestValidationInput{Request: check, PathParams: params, Route: route, Options: options}
		reqErr := openapi3filter.ValidateRequest(check.Context(), in)

		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		if rec.Header().Get(proxyError) != "" {
			return // the server did not answer
		}

		what := fmt.Sprintf("%s %s", r.Method, r.URL.RequestURI())
		if reqErr != nil && (rec.status < 400 || rec.status >= 500) {
			t.Errorf("%s: the OpenAPI document refuses the request, but the server answered %d:\n%v\nrequest body: %s",
				what, rec.status, reqErr, clip(reqBody))
		}
		if err := c.checkResponse(in, rec); err != nil {
			t.Errorf("%s: the %d response breaks the OpenAPI document:\n%v\nresponse body: %s", what, rec.status, err, clip(rec.body.Bytes()))
		}
	})
}

func (c *contract) checkResponse(in *openapi3filter.RequestValidationInput, rec *recorder) error {
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: rec.status, Header: rec.Header(), Options: options}
	if mt, _, _ := mime.ParseMediaType(rec.Header().Get("Content-Type")); mt == "text/event-stream" {
		opts := *options
		opts.ExcludeResponseBody = true
		out.Options = &opts
		if err := openapi3filter.ValidateResponse(in.Request.Context(), out.SetBodyBytes(nil)); err != nil {
			return err
		}
		return c.checkLogEvents(rec.body.Bytes())
	}
	return openapi3filter.ValidateResponse(in.Request.Context(), out.SetBodyBytes(rec.body.Bytes()))
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
