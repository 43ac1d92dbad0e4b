package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/labstack/echo/v4"

	"github.com/ordoflow/ordo/domain"
)

// Codes of the API's own, beside domain's.
const (
	codeNotImplemented   domain.Code = "not_implemented"
	codeMethodNotAllowed domain.Code = "method_not_allowed"
	// codeRangeNotSatisfiable: a Range outside an output's bytes.
	codeRangeNotSatisfiable domain.Code = "range_not_satisfiable"
)

// statusByCode is the one table from error code to HTTP status.
var statusByCode = map[domain.Code]int{
	domain.CodeInvalid:      http.StatusBadRequest,
	domain.CodeNotFound:     http.StatusNotFound,
	domain.CodeConflict:     http.StatusConflict,
	domain.CodeUnauthorized: http.StatusUnauthorized,
	domain.CodeForbidden:    http.StatusForbidden,
	domain.CodeTooLarge:     http.StatusRequestEntityTooLarge,
	domain.CodeUnavailable:  http.StatusServiceUnavailable,
	domain.CodeInternal:     http.StatusInternalServerError,
	codeNotImplemented:      http.StatusNotImplemented,
	codeMethodNotAllowed:    http.StatusMethodNotAllowed,
	codeRangeNotSatisfiable: http.StatusRequestedRangeNotSatisfiable,
}

// codeByStatus maps Echo's own errors (routing, binding) back to codes.
var codeByStatus = map[int]domain.Code{
	http.StatusBadRequest:            domain.CodeInvalid,
	http.StatusNotFound:              domain.CodeNotFound,
	http.StatusConflict:              domain.CodeConflict,
	http.StatusUnauthorized:          domain.CodeUnauthorized,
	http.StatusForbidden:             domain.CodeForbidden,
	http.StatusRequestEntityTooLarge: domain.CodeTooLarge,
	http.StatusServiceUnavailable:    domain.CodeUnavailable,
	http.StatusMethodNotAllowed:      codeMethodNotAllowed,
	http.StatusNotImplemented:        codeNotImplemented,
}

// errorBody is the envelope of every error response.
type errorBody struct {
	Error errorJSON `json:"error"`
}

// errorJSON is the error itself: Message is the whole error as a person
// reads it, every detail included ("invalid parameters: parameters.x: ...");
// Details are the same problems field by field, for programs (a form marks
// the field). A client shows the message alone.
type errorJSON struct {
	Code    domain.Code     `json:"code"`
	Message string          `json:"message"`
	Details []domain.Detail `json:"details"`
}

// handleError is Echo's one error handler: it turns any error into the
// envelope, logging only internal errors, whose text clients never see.
func (s *server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	body := s.errorOf(err, c.Request())
	status := statusByCode[body.Error.Code]
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	_ = c.JSON(status, body)
}

func (s *server) errorOf(err error, r *http.Request) errorBody {
	var (
		de      *domain.Error
		he      *echo.HTTPError
		connErr *pgconn.ConnectError
	)
	switch {
	case errors.As(err, &de) && de.Code != domain.CodeInternal:
		if _, known := statusByCode[de.Code]; known {
			return errorBody{errorJSON{Code: de.Code, Message: de.Error(), Details: nonNilDetails(de.Details)}}
		}
	case errors.As(err, &he):
		code, ok := codeByStatus[he.Code]
		if !ok {
			break
		}
		msg := http.StatusText(he.Code)
		switch code {
		case domain.CodeNotFound:
			msg = fmt.Sprintf("no route %s %s", r.Method, r.URL.Path)
		case codeMethodNotAllowed:
			msg = fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path)
		case domain.CodeTooLarge:
			msg = fmt.Sprintf("the body is larger than %d bytes", s.opts.BodyLimit)
		default:
			if m, isString := he.Message.(string); isString {
				msg = m
			}
		}
		return errorBody{errorJSON{Code: code, Message: msg, Details: []domain.Detail{}}}
	case errors.As(err, &connErr):
		s.log.Error("database unreachable", "method", r.Method, "path", r.URL.Path, "err", err)
		return errorBody{errorJSON{Code: domain.CodeUnavailable, Message: "the database cannot be reached", Details: []domain.Detail{}}}
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// the client went away; nobody reads this
		return errorBody{errorJSON{Code: domain.CodeUnavailable, Message: "request cancelled", Details: []domain.Detail{}}}
	}
	s.log.Error("internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	return errorBody{errorJSON{Code: domain.CodeInternal, Message: "internal error", Details: []domain.Detail{}}}
}

func nonNilDetails(d []domain.Detail) []domain.Detail {
	if d == nil {
		return []domain.Detail{}
	}
	return d
}

func notImplemented(what string) error {
	return domain.Errorf(codeNotImplemented, "%s is not available on this server yet", what)
}
