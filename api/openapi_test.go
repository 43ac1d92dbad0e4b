package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/projections"
)

type stubDeployments struct{ DeploymentCommands }
type stubReads struct{ ReadModel }
type stubProjection struct{}

func (stubProjection) Sync(context.Context) error         { return nil }
func (stubProjection) Lag(context.Context) (int64, error) { return 0, nil }
func (stubReads) RunGet(context.Context, uuid.UUID) (projections.FlowRun, error) {
	return projections.FlowRun{}, domain.Errorf(domain.CodeNotFound, "none")
}

// TestOpenAPIMatchesRoutes walks the routes Echo serves and the paths of
// the OpenAPI document: each must have the other.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	e, err := newEcho(Options{Deployments: stubDeployments{}, Reads: stubReads{}, Projection: stubProjection{}, Pool: &pgxpool.Pool{}})
	if err != nil {
		t.Fatal(err)
	}
	param := regexp.MustCompile(`:([a-z_]+)`)
	served := map[string]bool{}
	for _, r := range e.Routes() {
		if strings.HasPrefix(r.Path, "/*") || r.Method == echoAny || strings.HasPrefix(r.Path, riverUIPrefix) {
			continue
		}
		served[strings.ToLower(r.Method)+" "+param.ReplaceAllString(r.Path, "{$1}")] = true
	}
	documented := map[string]bool{}
	for path, item := range openAPIDocument["paths"].(obj) {
		for method := range item.(obj) {
			documented[method+" "+path] = true
		}
	}
	for route := range served {
		if !documented[route] {
			t.Errorf("route %s is served but not in openapi.json", route)
		}
	}
	for route := range documented {
		if !served[route] {
			t.Errorf("openapi.json documents %s, which is not served", route)
		}
	}
	if len(served) < 15 {
		t.Fatalf("only %d routes found: the walk is broken", len(served))
	}
	// every documented operation answers errors with the envelope
	for path, item := range openAPIDocument["paths"].(obj) {
		for method, o := range item.(obj) {
			if _, ok := o.(obj)["responses"].(obj)["default"]; !ok {
				t.Errorf("%s %s has no error response", method, path)
			}
		}
	}
}

const echoAny = "echo_route_any"

// A 405 from a stub server still carries the envelope.
func TestAPIMethodNotAllowedEnvelope(t *testing.T) {
	t.Parallel()
	e, err := newEcho(Options{Deployments: stubDeployments{}, Reads: stubReads{}, Projection: stubProjection{}, Pool: &pgxpool.Pool{}})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPut, "/api/v1/runs/x", nil)
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	if rec.Code != 405 || !strings.Contains(rec.Body.String(), `"code":"method_not_allowed"`) {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
}
