package api

import (
	"context"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/projections"
)

func (s *server) workQueueList(c echo.Context) error {
	if s.opts.WorkQueues == nil {
		return notImplemented("work queues")
	}
	q := s.query(c, "limit", "cursor")
	f := projections.WorkQueueFilter{Limit: q.int("limit"), Cursor: q.str("cursor")}
	if q.err != nil {
		return q.err
	}
	page, err := s.opts.WorkQueues.WorkQueueList(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

func (s *server) workQueueSave(c echo.Context) error {
	if s.opts.WorkQueues == nil {
		return notImplemented("work queues")
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	var req projections.WorkQueueSettings
	if err := decodeStrict(body, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	ctx := c.Request().Context()
	created, err := s.opts.WorkQueues.WorkQueueSave(ctx, req)
	if err != nil {
		return err
	}
	wq, err := s.opts.WorkQueues.WorkQueueGet(ctx, req.Name)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return c.JSON(status, wq)
}

func (s *server) workQueuePause(c echo.Context) error {
	return s.workQueueControl(c, func(q QueueControl) func(context.Context, string) error { return q.QueuePause })
}

func (s *server) workQueueResume(c echo.Context) error {
	return s.workQueueControl(c, func(q QueueControl) func(context.Context, string) error { return q.QueueResume })
}

func (s *server) workQueueControl(c echo.Context, method func(QueueControl) func(context.Context, string) error) error {
	if s.opts.WorkQueues == nil || s.opts.Queues == nil {
		return notImplemented("pausing and resuming work queues")
	}
	name := c.Param("name")
	if !domain.ValidName(name) {
		return domain.Errorf(domain.CodeNotFound, "work queue %q not found: not a valid queue name", name)
	}
	if err := s.noBody(c); err != nil {
		return err
	}
	ctx := c.Request().Context()
	if _, err := s.opts.WorkQueues.WorkQueueGet(ctx, name); err != nil {
		return err
	}
	if err := method(s.opts.Queues)(ctx, name); err != nil {
		return err
	}
	wq, err := s.opts.WorkQueues.WorkQueueGet(ctx, name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, wq)
}
