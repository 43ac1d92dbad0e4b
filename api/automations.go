package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/ordoflow/ordo/domain"
)

// Automations runs the automation commands and queries (implemented by
// automations.Service).
type Automations interface {
	AutomationCreate(ctx context.Context, spec domain.AutomationSpec, actor string) (domain.Automation, error)
	AutomationUpdate(ctx context.Context, id uuid.UUID, spec domain.AutomationSpec, actor string) (domain.Automation, error)
	AutomationPause(ctx context.Context, id uuid.UUID, actor string) (domain.Automation, error)
	AutomationResume(ctx context.Context, id uuid.UUID, actor string) (domain.Automation, error)
	AutomationDelete(ctx context.Context, id uuid.UUID, actor string) (domain.Automation, error)
	AutomationGet(ctx context.Context, id uuid.UUID) (domain.Automation, error)
	AutomationList(ctx context.Context) ([]domain.Automation, error)
	AutomationTest(ctx context.Context, id uuid.UUID, actor string) (uuid.UUID, error)
	AutomationDeliveries(ctx context.Context, id uuid.UUID, limit int) ([]domain.Delivery, error)
	DeliveryRetry(ctx context.Context, automationID, firingID uuid.UUID, action int) (domain.Delivery, error)
	RunFirings(ctx context.Context, runID uuid.UUID) ([]domain.RunFiring, error)
}

// automationJSON is an automation as the API shows it: its spec's fields
// with its id and state. A webhook's secret is never known here, only the
// name of the server's variable that holds it.
type automationJSON struct {
	ID uuid.UUID `json:"id"`
	domain.AutomationSpec
	Paused    bool      `json:"paused"`
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func automationOf(a domain.Automation) automationJSON {
	if a.Spec.Actions == nil {
		a.Spec.Actions = []domain.AutomationAction{}
	}
	return automationJSON{ID: a.ID, AutomationSpec: a.Spec, Paused: a.Paused, Version: a.Stream, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt}
}

func (s *server) routeAutomations(g *echo.Group) {
	g.POST("/automations", s.automationCreate)
	g.GET("/automations", s.automationList)
	g.GET("/automations/:id", s.automationGet)
	g.PUT("/automations/:id", s.automationUpdate)
	g.DELETE("/automations/:id", s.automationDelete)
	g.POST("/automations/:id/pause", s.automationPause)
	g.POST("/automations/:id/resume", s.automationResume)
	g.POST("/automations/:id/test", s.automationTest)
	g.GET("/automations/:id/deliveries", s.automationDeliveries)
	g.POST("/automations/:id/deliveries/:firing/:action/retry", s.deliveryRetry)
	g.GET("/runs/:id/firings", s.runFirings)
}

func (s *server) automations() (Automations, error) {
	if s.opts.Automations == nil {
		return nil, notImplemented("automations")
	}
	return s.opts.Automations, nil
}

func (s *server) automationSpec(c echo.Context) (domain.AutomationSpec, error) {
	body, err := s.readBody(c)
	if err != nil {
		return domain.AutomationSpec{}, err
	}
	return domain.ParseAutomation(body)
}

// automationTarget returns the service and the automation a route's {id}
// names: an id, or the name of a live automation. A command without a body
// (noBody) refuses one.
func (s *server) automationTarget(c echo.Context, noBody bool) (Automations, uuid.UUID, error) {
	svc, err := s.automations()
	if err != nil {
		return nil, uuid.Nil, err
	}
	ref, err := pathRef(c)
	if err != nil {
		return nil, uuid.Nil, err
	}
	if noBody {
		if err := s.noBody(c); err != nil {
			return nil, uuid.Nil, err
		}
	}
	if id, err := uuid.Parse(ref); err == nil {
		return svc, id, nil
	}
	list, err := svc.AutomationList(c.Request().Context())
	if err != nil {
		return nil, uuid.Nil, err
	}
	for _, a := range list {
		if a.Spec.Name == ref {
			return svc, a.ID, nil
		}
	}
	return nil, uuid.Nil, domain.Errorf(domain.CodeNotFound, "automation %q not found", ref)
}

func (s *server) automationCreate(c echo.Context) error {
	spec, err := s.automationSpec(c)
	if err != nil {
		return err
	}
	svc, err := s.automations()
	if err != nil {
		return err
	}
	a, err := svc.AutomationCreate(c.Request().Context(), spec, s.actor(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, automationOf(a))
}

func (s *server) automationList(c echo.Context) error {
	svc, err := s.automations()
	if err != nil {
		return err
	}
	list, err := svc.AutomationList(c.Request().Context())
	if err != nil {
		return err
	}
	items := make([]automationJSON, len(list))
	for i, a := range list {
		items[i] = automationOf(a)
	}
	return c.JSON(http.StatusOK, map[string]any{"items": items, "next_cursor": nil})
}

func (s *server) automationGet(c echo.Context) error {
	return s.automationCommand(c, func(svc Automations, ctx context.Context, id uuid.UUID, _ string) (domain.Automation, error) {
		return svc.AutomationGet(ctx, id)
	})
}

func (s *server) automationUpdate(c echo.Context) error {
	spec, err := s.automationSpec(c)
	if err != nil {
		return err
	}
	svc, id, err := s.automationTarget(c, false)
	if err != nil {
		return err
	}
	a, err := svc.AutomationUpdate(c.Request().Context(), id, spec, s.actor(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, automationOf(a))
}

func (s *server) automationDelete(c echo.Context) error {
	svc, id, err := s.automationTarget(c, true)
	if err != nil {
		return err
	}
	if _, err := svc.AutomationDelete(c.Request().Context(), id, s.actor(c)); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *server) automationPause(c echo.Context) error {
	return s.automationCommand(c, Automations.AutomationPause)
}

func (s *server) automationResume(c echo.Context) error {
	return s.automationCommand(c, Automations.AutomationResume)
}

// automationCommand runs cmd on the automation the route names (a GET or a
// POST without a body) and answers with the automation.
func (s *server) automationCommand(c echo.Context, cmd func(Automations, context.Context, uuid.UUID, string) (domain.Automation, error)) error {
	svc, id, err := s.automationTarget(c, c.Request().Method != http.MethodGet)
	if err != nil {
		return err
	}
	a, err := cmd(svc, c.Request().Context(), id, s.actor(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, automationOf(a))
}

func (s *server) automationTest(c echo.Context) error {
	svc, id, err := s.automationTarget(c, true)
	if err != nil {
		return err
	}
	firing, err := svc.AutomationTest(c.Request().Context(), id, s.actor(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, map[string]any{"automation_id": id, "firing_id": firing})
}

func (s *server) automationDeliveries(c echo.Context) error {
	svc, id, err := s.automationTarget(c, false)
	if err != nil {
		return err
	}
	q := s.query(c, "limit")
	limit := q.int("limit")
	if q.err != nil {
		return q.err
	}
	list, err := svc.AutomationDeliveries(c.Request().Context(), id, limit)
	if err != nil {
		return err
	}
	if list == nil {
		list = []domain.Delivery{}
	}
	for i := range list {
		emptyAttempts(&list[i])
	}
	return c.JSON(http.StatusOK, map[string]any{"items": list, "next_cursor": nil})
}

// emptyAttempts shows a delivery's missing attempt list as [].
func emptyAttempts(d *domain.Delivery) {
	if d.AttemptList == nil {
		d.AttemptList = []domain.DeliveryAttempt{}
	}
}

// deliveryRetry re-queues a dead delivery: POST
// /automations/{id}/deliveries/{firing}/{action}/retry.
func (s *server) deliveryRetry(c echo.Context) error {
	svc, id, err := s.automationTarget(c, true)
	if err != nil {
		return err
	}
	firing, err := uuid.Parse(c.Param("firing"))
	if err != nil {
		return domain.Invalid("firing", "is not a firing id (a UUID): %q", c.Param("firing"))
	}
	action, err := strconv.Atoi(c.Param("action"))
	if err != nil || action < 0 {
		return domain.Invalid("action", "is not an action's index (0, 1, ...): %q", c.Param("action"))
	}
	d, err := svc.DeliveryRetry(c.Request().Context(), id, firing, action)
	if err != nil {
		return err
	}
	emptyAttempts(&d)
	return c.JSON(http.StatusAccepted, d)
}

// runFirings lists what fired for a run: GET /runs/{id}/firings.
func (s *server) runFirings(c echo.Context) error {
	svc, err := s.automations()
	if err != nil {
		return err
	}
	id, err := s.pathRunID(c)
	if err != nil {
		return err
	}
	if _, err := s.opts.Reads.RunGet(c.Request().Context(), id); err != nil {
		return err
	}
	list, err := svc.RunFirings(c.Request().Context(), id)
	if err != nil {
		return err
	}
	if list == nil {
		list = []domain.RunFiring{}
	}
	for i := range list {
		for j := range list[i].Deliveries {
			emptyAttempts(&list[i].Deliveries[j])
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"items": list, "next_cursor": nil})
}
