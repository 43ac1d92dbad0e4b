package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/projections"
)

func (s *server) deploymentSave(c echo.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	var spec domain.DeploymentSpec
	if ct := c.Request().Header.Get(echo.HeaderContentType); strings.Contains(ct, "yaml") {
		spec, err = domain.ParseDeploymentYAML(body)
	} else {
		spec, err = domain.ParseDeployment(body)
	}
	if err != nil {
		return err
	}
	if err := checkNUL(spec); err != nil {
		return err
	}
	ctx := c.Request().Context()
	d, created, err := s.opts.Deployments.DeploymentSave(ctx, spec, s.actor(c))
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return c.JSON(status, s.deploymentAfterWrite(c, d))
}

// deploymentAfterWrite shows a deployment just written: from the read
// model when it caught up, else from the write side.
func (s *server) deploymentAfterWrite(c echo.Context, d domain.Deployment) projections.Deployment {
	ctx := c.Request().Context()
	if s.syncStream(ctx, d.ID) {
		if got, err := s.opts.Reads.DeploymentGet(ctx, d.ID); err == nil && got.Version == d.Version && got.Paused == d.Paused {
			return got
		}
	}
	return projections.DeploymentOf(d)
}

func (s *server) deploymentList(c echo.Context) error {
	q := s.query(c, "name", "tag", "work_queue", "limit", "cursor")
	f := projections.DeploymentFilter{Name: q.str("name"), Tag: q.str("tag"), WorkQueue: q.str("work_queue"), Limit: q.int("limit"), Cursor: q.str("cursor")}
	if q.err != nil {
		return q.err
	}
	page, err := s.opts.Reads.DeploymentList(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

func (s *server) deploymentGet(c echo.Context) error {
	id, err := s.pathDeploymentID(c)
	if err != nil {
		return err
	}
	d, err := s.opts.Reads.DeploymentGet(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, d)
}

func (s *server) deploymentPause(c echo.Context) error {
	return s.deploymentCommand(c, s.opts.Deployments.DeploymentPause)
}

func (s *server) deploymentResume(c echo.Context) error {
	return s.deploymentCommand(c, s.opts.Deployments.DeploymentResume)
}

func (s *server) deploymentCommand(c echo.Context, cmd func(ctx context.Context, id uuid.UUID, actor string) (domain.Deployment, error)) error {
	id, err := s.pathDeploymentID(c)
	if err != nil {
		return err
	}
	if err := s.noBody(c); err != nil {
		return err
	}
	d, err := cmd(c.Request().Context(), id, s.actor(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.deploymentAfterWrite(c, d))
}

func (s *server) deploymentDelete(c echo.Context) error {
	id, err := s.pathDeploymentID(c)
	if err != nil {
		return err
	}
	if err := s.noBody(c); err != nil {
		return err
	}
	if _, err := s.opts.Deployments.DeploymentDelete(c.Request().Context(), id, s.actor(c)); err != nil {
		return err
	}
	s.syncStream(c.Request().Context(), id)
	return c.NoContent(http.StatusNoContent)
}

func (s *server) runCreate(c echo.Context) error {
	if s.opts.Runs == nil {
		return notImplemented("creating runs")
	}
	id, err := s.pathDeploymentID(c)
	if err != nil {
		return err
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	var req RunCreateRequest
	if err := decodeStrict(body, &req); err != nil {
		return err
	}
	if err := checkNUL(req); err != nil {
		return err
	}
	runID, err := s.opts.Runs.RunCreate(c.Request().Context(), id, req, s.actor(c))
	if err != nil {
		return err
	}
	return s.runAfterWrite(c, runID, http.StatusCreated)
}

// runAfterWrite answers a write to a run with the run. When the read
// models have not caught up within SyncTimeout (a projector far behind on
// a loaded server), the run is folded from its events in the log, which
// hold the write: a write that was made is never answered as not found.
func (s *server) runAfterWrite(c echo.Context, id uuid.UUID, status int) error {
	ctx := c.Request().Context()
	if !s.syncStream(ctx, id) {
		if h, err := s.opts.Reads.RunHistory(ctx, id, projections.HistoryPoint{}); err == nil {
			return c.JSON(status, h.Run)
		}
	}
	run, err := s.opts.Reads.RunGet(ctx, id)
	if err != nil {
		return err
	}
	return c.JSON(status, run)
}

func (s *server) runCancel(c echo.Context) error {
	return s.runCommand(c, "cancelling runs", func(r RunCommands) func(ctx context.Context, id uuid.UUID, actor string) error { return r.RunCancel })
}

func (s *server) runRetry(c echo.Context) error {
	return s.runCommand(c, "retrying runs", func(r RunCommands) func(ctx context.Context, id uuid.UUID, actor string) error { return r.RunRetry })
}

func (s *server) runCommand(c echo.Context, what string, method func(RunCommands) func(ctx context.Context, id uuid.UUID, actor string) error) error {
	if s.opts.Runs == nil {
		return notImplemented(what)
	}
	id, err := s.pathRunID(c)
	if err != nil {
		return err
	}
	if err := s.noBody(c); err != nil {
		return err
	}
	if err := method(s.opts.Runs)(c.Request().Context(), id, s.actor(c)); err != nil {
		return err
	}
	return s.runAfterWrite(c, id, http.StatusOK)
}

func (s *server) runList(c echo.Context) error {
	q := s.query(c, "state", "deployment", "tag", "name", "work_queue", "since", "until", "limit", "cursor", "upcoming")
	times, err := projections.ParseRunTimes(q.str("upcoming"))
	if err != nil && q.err == nil {
		q.err = err
	}
	f := projections.RunFilter{Times: times,
		Deployment: q.str("deployment"), Tags: q.list("tag"), Name: q.str("name"), WorkQueue: q.str("work_queue"),
		Since: q.time("since"), Until: q.time("until"), Limit: q.int("limit"), Cursor: q.str("cursor"),
	}
	for _, st := range q.list("state") {
		t := domain.StateType(strings.ToUpper(st))
		if !t.Valid() && q.err == nil {
			q.err = domain.Invalid("state", "unknown state type %q", st)
		}
		f.States = append(f.States, t)
	}
	if q.err != nil {
		return q.err
	}
	buf := jsonBuffers.Get().(*[]byte)
	defer jsonBuffers.Put(buf)
	if *buf, err = s.opts.Reads.AppendRunListJSON(c.Request().Context(), (*buf)[:0], f); err != nil {
		return err
	}
	// A stated length spares the response chunked encoding.
	c.Response().Header().Set(echo.HeaderContentLength, strconv.Itoa(len(*buf)))
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, *buf)
}

// jsonBuffers holds the buffers that hand-encoded list pages are written to.
var jsonBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

func (s *server) runGet(c echo.Context) error {
	id, err := s.pathRunID(c)
	if err != nil {
		return err
	}
	run, err := s.opts.Reads.RunGet(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, run)
}

func (s *server) runGraph(c echo.Context) error {
	id, err := s.pathRunID(c)
	if err != nil {
		return err
	}
	g, err := s.opts.Reads.RunGraph(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, g)
}

func (s *server) runEvents(c echo.Context) error {
	id, err := s.pathRunID(c)
	if err != nil {
		return err
	}
	events, err := s.opts.Reads.RunEvents(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, projections.Page[projections.Event]{Items: events})
}

func (s *server) runHistory(c echo.Context) error {
	id, err := s.pathRunID(c)
	if err != nil {
		return err
	}
	q := s.query(c, "at")
	if q.err != nil {
		return q.err
	}
	at := q.str("at")
	var point projections.HistoryPoint
	switch {
	case at == "":
		return domain.Invalid("at", "required: an RFC 3339 time, a log position or an event cursor")
	case strings.ContainsAny(at, "T:"):
		if point.Time = q.time("at"); q.err != nil {
			return q.err
		}
	default:
		point.Log = at
	}
	h, err := s.opts.Reads.RunHistory(c.Request().Context(), id, point)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, h)
}

func (s *server) eventList(c echo.Context) error {
	q := s.query(c, "after", "limit", "type")
	f := projections.EventFilter{After: q.str("after"), Limit: q.int("limit"), Types: q.list("type")}
	if q.err != nil {
		return q.err
	}
	page, err := s.opts.Reads.EventList(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}
