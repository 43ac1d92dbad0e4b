package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ordoflow/ordo/api"
	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/apicontract"
	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/jobs"
	"github.com/ordoflow/ordo/projections"
)

// TestRunCreatedWhileReadModelsLag: a run created while the projector is
// stopped (a loaded server whose read models are far behind) is answered
// 201 with the run folded from the log, never 404, and its state is the
// one its events give.
func TestRunCreatedWhileReadModelsLag(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, domain.NewRegistry())
	t.Cleanup(store.Close)
	proj, err := projections.NewProjector(store, projections.ProjectorOptions{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	projCtx, stopProjector := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = proj.Run(projCtx) }()
	waitProjectorStarted(t, pool)
	client, err := jobs.NewInsertClient(pool)
	if err != nil {
		t.Fatal(err)
	}
	svc := commands.NewService(pool, store, jobs.RiverEnqueuer(client), commands.ServiceOptions{})
	h, err := api.New(api.Options{
		Deployments: commands.NewDeploymentCommands(store),
		Runs:        testRuns{runs: commands.NewDeploymentRuns(svc), svc: svc},
		Reads:       projections.NewReader(store),
		Projection:  proj,
		Pool:        pool,
		Registry:    prometheus.NewRegistry(),
		SyncTimeout: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(apicontract.Handler(t, h))
	t.Cleanup(srv.Close)
	b := bundle{url: srv.URL, pool: pool, store: store, proj: proj}

	created := b.do(t, "POST", "/api/v1/deployments", deploymentBody("lagging", nil))
	if created.status != http.StatusCreated {
		t.Fatalf("create deployment: %d %s", created.status, created.body)
	}
	var d struct{ ID string }
	created.decode(t, &d)

	stopProjector()
	<-stopped
	res := b.do(t, "POST", "/api/v1/deployments/"+d.ID+"/runs", map[string]any{})
	if res.status != http.StatusCreated {
		t.Fatalf("a run created while the read models lag: %d %s, want 201 with the run", res.status, res.body)
	}
	var run struct {
		ID             string
		DeploymentName string `json:"deployment_name"`
		State          struct{ Type string }
	}
	res.decode(t, &run)
	if run.ID == "" || run.DeploymentName != "lagging" || run.State.Type == "" {
		t.Fatalf("the run answered: %s", res.body)
	}
}
