package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/api"
	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/projections"
)

// racingDeployments are deployment commands whose pause always loses the
// race on the deployment's stream, its version conflict escaping wrapped.
type racingDeployments struct{ *commands.DeploymentCommands }

func (racingDeployments) DeploymentPause(_ context.Context, id uuid.UUID, _ string) (domain.Deployment, error) {
	return domain.Deployment{}, fmt.Errorf("pause: %w", &eventstore.ConflictError{StreamIDs: []uuid.UUID{id}})
}

// TestAPIAnswersAnEscapingVersionConflictWith409: a stream version conflict
// that reaches the API is a 409 with code "conflict", not a 500.
func TestAPIAnswersAnEscapingVersionConflictWith409(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, domain.NewRegistry())
	t.Cleanup(store.Close)
	proj, err := projections.NewProjector(store, projections.ProjectorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := api.New(api.Options{
		Deployments: racingDeployments{commands.NewDeploymentCommands(store)},
		Reads:       projections.NewReader(store),
		Projection:  proj,
		Pool:        pool,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	res, err := http.Post(srv.URL+"/api/v1/deployments/"+uuid.NewString()+"/pause", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body struct {
		Error struct {
			Code domain.Code `json:"code"`
		} `json:"error"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusConflict || body.Error.Code != domain.CodeConflict {
		t.Errorf("status %d, code %q; want 409 and %q", res.StatusCode, body.Error.Code, domain.CodeConflict)
	}
}
