package apicontract

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// recordingT keeps the failures Handler reports instead of failing the test.
type recordingT struct {
	testing.TB
	errors []string
}

func (r *recordingT) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func TestChecks(t *testing.T) {
	t.Parallel()
	const state = `{"type": "COMPLETED", "name": "Completed", "timestamp": "2026-05-01T10:00:00Z", "message": ""}`
	const line = `{"id": 1, "timestamp": "2026-05-01T10:00:00Z", "task_run_id": "t", "task_name": "a", "attempt": 1, "stream": "stdout", "level": null, "message": "hi"}`
	tests := []struct {
		name        string
		method      string
		target      string
		status      int
		contentType string
		body        string
		wantError   string // "" for none
	}{
		{"ListMatches", "GET", "/api/v1/work-queues", 200, "application/json", `{"items": [], "next_cursor": null}`, ""},
		{"UndocumentedField", "GET", "/api/v1/work-queues", 200, "application/json", `{"items": [], "next_cursor": null, "total": 3}`, `property "total" is unsupported`},
		{"PathNotInTheDocument", "GET", "/ui/runs", 200, "application/json", `{"anything": 1}`, ""},
		{"RequiredFieldMissing", "GET", "/api/v1/work-queues", 200, "application/json", `{"items": []}`, `property "next_cursor" is missing`},
		{"ErrorEnvelope", "GET", "/api/v1/runs/x", 404, "application/json", `{"error": {"code": "not_found", "message": "no run x", "details": []}}`, ""},
		{"ErrorWithoutEnvelope", "GET", "/api/v1/runs/x", 404, "application/json", `{"message": "no run x"}`, `property "error" is missing`},
		{"RefusedRequestAnsweredOK", "GET", "/api/v1/runs?limit=0", 200, "application/json", `{"items": [], "next_cursor": null}`, "the OpenAPI document refuses the request"},
		{"RefusedRequestRefused", "GET", "/api/v1/runs?limit=0", 400, "application/json", `{"error": {"code": "invalid", "message": "limit: too small", "details": [{"field": "limit", "message": "too small"}]}}`, ""},
		{"LogStream", "GET", "/api/v1/runs/x/logs?follow=true", 200, "text/event-stream", "event: log\nid: 1\ndata: " + line + "\n\nevent: end\ndata: {}\n\n", ""},
		{"LogStreamUndocumentedField", "GET", "/api/v1/runs/x/logs?follow=true", 200, "text/event-stream", "event: log\ndata: " + strings.Replace(line, `"id"`, `"worker": "w", "id"`, 1) + "\n\n", `property "worker" is unsupported`},
		{"StateEnum", "GET", "/api/v1/runs/x/graph", 200, "application/json", `{"flow_run_id": "x", "nodes": [{"id": "a", "task_name": "a", "state": ` + strings.Replace(state, "COMPLETED", "DONE", 1) + `}], "edges": []}`, "value is not one of the allowed values"},
	}
	for _, tt := range tests {
		answer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", tt.contentType)
			w.WriteHeader(tt.status)
			_, _ = w.Write([]byte(tt.body))
		})
		check := func(t *testing.T, rt *recordingT, status int, body string) {
			t.Helper()
			if status != tt.status || body != tt.body {
				t.Errorf("the response was changed on its way: %d %s", status, body)
			}
			got := strings.Join(rt.errors, "\n")
			switch {
			case tt.wantError == "" && got != "":
				t.Errorf("want no failure, got:\n%s", got)
			case tt.wantError != "" && !strings.Contains(got, tt.wantError):
				t.Errorf("want a failure with %q, got:\n%s", tt.wantError, got)
			}
		}
		t.Run(tt.name+"/Handler", func(t *testing.T) {
			t.Parallel()
			rt := &recordingT{TB: t}
			rec := httptest.NewRecorder()
			Handler(rt, answer).ServeHTTP(rec, httptest.NewRequest(tt.method, tt.target, nil))
			check(t, rt, rec.Code, rec.Body.String())
		})
		if tt.contentType == "text/event-stream" {
			continue // Transport leaves event streams to the client
		}
		t.Run(tt.name+"/Transport", func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(answer)
			defer srv.Close()
			rt := &recordingT{TB: t}
			req, err := http.NewRequest(tt.method, srv.URL+tt.target, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := (&http.Client{Transport: Transport(rt, nil)}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			check(t, rt, resp.StatusCode, string(body))
		})
	}
}
