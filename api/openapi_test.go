package api

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/santhosh-tekuri/jsonschema/v6"

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
		path := param.ReplaceAllString(r.Path, "{$1}")
		if p, ok := strings.CutSuffix(path, "/outputs/*"); ok { // the name, slashes and all
			path = p + "/outputs/{name}"
		}
		served[strings.ToLower(r.Method)+" "+path] = true
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

// TestOpenAPIDocumentIsValidOpenAPI30 checks the served document against the
// official JSON Schema of OpenAPI 3.0 (testdata, from the OpenAPI
// Initiative), which client generators and Swagger tooling apply; the
// library that reads the document in the other tests is more lenient (it
// lets a null through where an array belongs).
func TestOpenAPIDocumentIsValidOpenAPI30(t *testing.T) {
	t.Parallel()
	e, err := newEcho(Options{Deployments: stubDeployments{}, Reads: stubReads{}, Projection: stubProjection{}, Pool: &pgxpool.Pool{}})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/openapi.json", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /api/v1/openapi.json: %d %s", rec.Code, rec.Body)
	}
	f, err := os.Open("testdata/openapi-3.0-schema.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	meta, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("openapi-3.0.json", meta); err != nil {
		t.Fatal(err)
	}
	schema, err := c.Compile("openapi-3.0.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(rec.Body.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.Validate(doc); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI 3.0 document:\n%v", err)
	}
}
