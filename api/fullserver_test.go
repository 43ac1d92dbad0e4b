package api_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ordoflow/ordo/api"
	"github.com/ordoflow/ordo/api/ui"
	"github.com/ordoflow/ordo/automations"
	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/apicontract"
	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/jobs"
	"github.com/ordoflow/ordo/projections"
	"github.com/ordoflow/ordo/projections/projtest"
)

// fullBundle is the whole HTTP surface of `ordo server`: the API with run
// commands and River UI, the web UI, and optionally the token check in
// front of both, routed the way cmd/ordo routes them.
type fullBundle struct {
	bundle
	handler http.Handler // the whole surface, to call without the network (unchecked: serve checks)
	auth    *api.Auth
	routes  []*echo.Route
}

// fullSetup starts the full HTTP surface on a database of its own. With
// withAuth, requests are checked by an api.Auth with a short cache.
func fullSetup(t testing.TB, withAuth bool) fullBundle {
	t.Helper()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, domain.NewRegistry())
	proj, err := projections.NewProjector(store, projections.ProjectorOptions{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	client, err := jobs.NewInsertClient(pool)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = proj.Run(ctx) }()
	waitProjectorStarted(t, pool)
	var auth *api.Auth
	if withAuth {
		auth = api.NewAuth(pool, api.AuthOptions{CacheTTL: 100 * time.Millisecond})
	}
	svc := commands.NewService(pool, store, jobs.RiverEnqueuer(client), commands.ServiceOptions{})
	blobs := newBlobs(t)
	autoRiver, err := automations.NewRiverClient(pool, automations.DeliveryOptions{}) // not started
	if err != nil {
		t.Fatal(err)
	}
	h, err := api.New(api.Options{
		Automations: automations.NewService(store, autoRiver, automations.ServiceOptions{}),
		Deployments: commands.NewDeploymentCommands(store),
		Runs:        testRuns{runs: commands.NewDeploymentRuns(svc), svc: svc},
		Reads:       projections.NewReader(store),
		Projection:  proj,
		Blobs:       blobs,
		Pool:        pool,
		Registry:    prometheus.NewRegistry(),
		River:       client,
		Context:     ctx,
		Auth:        auth,
	})
	if err != nil {
		t.Fatal(err)
	}
	var uiHandler http.Handler = ui.Handler(ui.Options{Store: store, Projection: proj})
	if auth != nil {
		uiHandler = auth.ProtectUI(uiHandler)
	}
	handler := routeLikeServer(h, uiHandler)
	srv := httptest.NewServer(apicontract.Handler(t, handler))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		<-done
		store.Close()
	})
	return fullBundle{
		bundle:  bundle{url: srv.URL, pool: pool, store: store, proj: proj, log: projtest.NewLog(t, store), blobs: blobs},
		handler: handler, auth: auth, routes: h.(*echo.Echo).Routes(),
	}
}

// routeLikeServer routes as cmd/ordo's withUI does.
func routeLikeServer(apiHandler, uiHandler http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case strings.HasPrefix(p, "/api/"), strings.HasPrefix(p, "/riverui"), p == "/healthz", p == "/readyz", p == "/metrics":
			apiHandler.ServeHTTP(w, r)
		default:
			uiHandler.ServeHTTP(w, r)
		}
	})
}

// testRuns turns the API's run commands into the jobs service's, as
// cmd/ordo does.
type testRuns struct {
	runs *commands.DeploymentRuns
	svc  *commands.Service
}

func (r testRuns) RunCreate(ctx context.Context, deploymentID uuid.UUID, req api.RunCreateRequest, actor string) (uuid.UUID, error) {
	rr := commands.RunRequest{Parameters: req.Parameters, IdempotencyKey: req.IdempotencyKey, Name: req.Name}
	if req.ScheduledAt != nil {
		rr.ScheduledAt = *req.ScheduledAt
	}
	run, err := r.runs.RunFromDeployment(ctx, deploymentID, rr, actor)
	return run.ID, err
}

func (r testRuns) RunCancel(ctx context.Context, id uuid.UUID, actor string) error {
	_, err := r.svc.RunCancel(ctx, id, actor)
	return err
}

func (r testRuns) RunRetry(ctx context.Context, id uuid.UUID, actor string) error {
	_, err := r.svc.RunRetry(ctx, id, actor)
	return err
}

// send makes one request and reads at most 1 MiB of the answer; an event
// stream is not read (it would not end).
func (b fullBundle) send(t *testing.T, method, path string, body []byte, header ...string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, b.url+path, rd)
	if err != nil {
		t.Fatalf("%s %q: %v", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %q: %v", method, path, err)
	}
	defer resp.Body.Close()
	out := response{status: resp.StatusCode, header: resp.Header}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		out.body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s %q: read: %v", method, path, err)
		}
	}
	return out
}

// bearer is the header pair that sends a token.
func bearer(token string) []string {
	if token == "" {
		return nil
	}
	return []string{"Authorization", "Bearer " + token}
}

// tableCounts counts the rows of every table of the public schema (Ordo's
// and River's), to show that requests changed nothing.
func tableCounts(t *testing.T, b bundle) map[string]int64 {
	t.Helper()
	ctx := context.Background()
	rows, err := b.pool.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	counts := map[string]int64{}
	for _, tbl := range tables {
		var n int64
		if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM `+`"`+tbl+`"`).Scan(&n); err != nil {
			t.Fatalf("count %s: %v", tbl, err)
		}
		counts[tbl] = n
	}
	return counts
}

// sameCounts fails the test with every table whose count changed.
func sameCounts(t *testing.T, before, after map[string]int64, ignore ...string) {
	t.Helper()
	for tbl, n := range before {
		if after[tbl] != n && !slices.Contains(ignore, tbl) {
			t.Errorf("table %s had %d rows, now %d", tbl, n, after[tbl])
		}
	}
	for tbl := range after {
		if _, ok := before[tbl]; !ok {
			t.Errorf("table %s appeared", tbl)
		}
	}
}
