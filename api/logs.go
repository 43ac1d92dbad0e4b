package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/projections"
)

// runLogs serves GET /runs/{id}/logs: a page of lines, or with follow=true
// a Server-Sent Events stream of every line (those stored, then new ones as
// they come) that ends with an "end" event once the run is terminal.
func (s *server) runLogs(c echo.Context) error {
	logs := s.opts.Logs
	if logs == nil {
		return notImplemented("task logs")
	}
	id, err := s.pathRunID(c)
	if err != nil {
		return err
	}
	q := s.query(c, "task", "after", "limit", "follow")
	f := projections.LogFilter{Task: q.str("task"), Limit: q.int("limit")}
	f.After = q.int64("after")
	follow := q.bool("follow")
	if q.err != nil {
		return q.err
	}
	if last := c.Request().Header.Get("Last-Event-ID"); last != "" && q.str("after") == "" {
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil {
			return domain.Invalid("Last-Event-ID", "must be the id of a log line, got %q", last)
		}
		f.After = n
	}
	ctx := c.Request().Context()
	if !follow {
		page, err := logs.RunLogs(ctx, id, f)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, page)
	}

	notify, stop := logs.LogNotify(id)
	defer stop()
	state, err := logs.RunState(ctx, id)
	if err != nil {
		return err
	}
	page, err := logs.RunLogs(ctx, id, f) // bad filters are refused before the stream starts
	if err != nil {
		return err
	}
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, "text/event-stream")
	w.Header().Set(echo.HeaderCacheControl, "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	w.Flush()
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	for {
		for _, l := range page.Items {
			b, _ := json.Marshal(l)
			if _, err := fmt.Fprintf(w, "id: %d\nevent: log\ndata: %s\n\n", l.ID, b); err != nil {
				return nil // the client went away
			}
			f.After = l.ID
		}
		w.Flush()
		if page.NextCursor == nil {
			if state.Type.Terminal() {
				// every line was stored before the run ended (workers store
				// an attempt's lines before its outcome), and all are sent
				b, _ := json.Marshal(map[string]any{"state": state})
				fmt.Fprintf(w, "event: end\ndata: %s\n\n", b)
				w.Flush()
				return nil
			}
			if !s.waitForLines(c, notify, keepAlive.C) {
				return nil
			}
		}
		// The state first, then the lines: lines stored before the state
		// was seen terminal are in the next read.
		if state, err = logs.RunState(ctx, id); err == nil {
			page, err = logs.RunLogs(ctx, id, f)
		}
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("follow logs", "run", id, "err", err)
				b, _ := json.Marshal(s.errorOf(err, c.Request()))
				fmt.Fprintf(w, "event: error\ndata: %s\n\n", b)
				w.Flush()
			}
			return nil
		}
	}
}

// waitForLines waits for a notification of new lines, the poll interval or
// the client leaving (false), sending a comment to keep the connection
// open on the way.
func (s *server) waitForLines(c echo.Context, notify <-chan struct{}, keepAlive <-chan time.Time) bool {
	poll := time.NewTimer(s.opts.LogPollInterval)
	defer poll.Stop()
	for {
		select {
		case <-c.Request().Context().Done():
			return false
		case <-notify:
			return true
		case <-poll.C:
			return true
		case <-keepAlive:
			if _, err := fmt.Fprint(c.Response(), ": keep-alive\n\n"); err != nil {
				return false
			}
			c.Response().Flush()
		}
	}
}
