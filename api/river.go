package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/rivertype"
	"riverqueue.com/riverui"

	"github.com/ordoflow/ordo/domain"
)

// RiverQueues returns a QueueControl that pauses and resumes work queues
// with River (client.QueuePause and QueueResume), so that every worker on
// the queue stops or starts fetching its task runs within moments. A queue
// that no worker has started yet gets River's row for it first: it is then
// paused from the first worker's start on.
func RiverQueues(client *river.Client[pgx.Tx]) QueueControl {
	return riverQueues{client}
}

type riverQueues struct{ client *river.Client[pgx.Tx] }

func (r riverQueues) QueuePause(ctx context.Context, name string) error {
	if err := r.ensure(ctx, name); err != nil {
		return err
	}
	return r.riverError(name, r.client.QueuePause(ctx, name, nil))
}

func (r riverQueues) QueueResume(ctx context.Context, name string) error {
	if err := r.ensure(ctx, name); err != nil {
		return err
	}
	return r.riverError(name, r.client.QueueResume(ctx, name, nil))
}

func (r riverQueues) ensure(ctx context.Context, name string) error {
	_, err := r.client.Driver().GetExecutor().QueueCreateOrSetUpdatedAt(ctx, &riverdriver.QueueCreateOrSetUpdatedAtParams{
		Name: name, Metadata: []byte("{}"),
	})
	if err != nil {
		return fmt.Errorf("create river queue %s: %w", name, err)
	}
	return nil
}

func (r riverQueues) riverError(name string, err error) error {
	if errors.Is(err, rivertype.ErrNotFound) {
		return domain.Errorf(domain.CodeNotFound, "work queue %q not found", name)
	}
	if err != nil {
		return fmt.Errorf("river queue %s: %w", name, err)
	}
	return nil
}

// riverUIPrefix is where River's own UI is served: job-level inspection.
const riverUIPrefix = "/riverui"

// mountRiverUI serves River's UI (its assets are embedded in the module)
// under /riverui/, its background services living until ctx ends.
func mountRiverUI(ctx context.Context, e *echo.Echo, client *river.Client[pgx.Tx], logger *slog.Logger) error {
	h, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints(client, nil),
		Logger:    logger,
		Prefix:    riverUIPrefix,
	})
	if err != nil {
		return fmt.Errorf("river ui: %w", err)
	}
	if err := h.Start(ctx); err != nil {
		return fmt.Errorf("start river ui: %w", err)
	}
	handler := echo.WrapHandler(h)
	e.GET(riverUIPrefix, func(c echo.Context) error { return c.Redirect(302, riverUIPrefix+"/") })
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"} {
		e.Add(m, riverUIPrefix+"/*", handler)
	}
	return nil
}
