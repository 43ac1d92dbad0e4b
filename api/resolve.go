package api

import (
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/ordoflow/ordo/domain"
)

// Every /runs/{id} and /deployments/{id} route takes a name where it takes
// an id, resolved here once for all of them, by the rules the CLI states:
// an id is taken as it is; a name must be carried by exactly one run (or
// deployment). A name several runs carry is a conflict that lists their ids,
// so that the caller can pick one; a name nobody carries is not found.

// maxListedIDs bounds the ids an ambiguous name's error lists.
const maxListedIDs = 20

// pathRunID reads the :id path parameter of a run route: a run's id or its
// name.
func (s *server) pathRunID(c echo.Context) (uuid.UUID, error) {
	ref, err := pathRef(c)
	if err != nil {
		return uuid.Nil, err
	}
	if id, err := uuid.Parse(ref); err == nil {
		return id, nil
	}
	ids, err := s.opts.Reads.RunIDsByName(c.Request().Context(), ref, maxListedIDs+1)
	if err != nil {
		return uuid.Nil, err
	}
	switch len(ids) {
	case 0:
		return uuid.Nil, domain.Errorf(domain.CodeNotFound, "no run named %q (a run is named by its id or its name)", ref)
	case 1:
		return ids[0], nil
	}
	count := fmt.Sprint(len(ids))
	if len(ids) > maxListedIDs {
		ids, count = ids[:maxListedIDs], fmt.Sprintf("more than %d", maxListedIDs)
	}
	e := &domain.Error{Code: domain.CodeConflict, Message: fmt.Sprintf("%s runs are named %q, name one by its id", count, ref)}
	for _, id := range ids {
		e.Details = append(e.Details, domain.Detail{Field: "id", Message: id.String()})
	}
	return uuid.Nil, e
}

// pathDeploymentID reads the :id path parameter of a deployment route: a
// deployment's id or its name (one live deployment holds a name).
func (s *server) pathDeploymentID(c echo.Context) (uuid.UUID, error) {
	ref, err := pathRef(c)
	if err != nil {
		return uuid.Nil, err
	}
	if id, err := uuid.Parse(ref); err == nil {
		return id, nil
	}
	id, found, err := s.opts.Reads.DeploymentIDByName(c.Request().Context(), ref)
	if err != nil {
		return uuid.Nil, err
	}
	if !found {
		return uuid.Nil, domain.Errorf(domain.CodeNotFound, "no deployment named %q (a deployment is named by its id or its name)", ref)
	}
	return id, nil
}

// pathRef is the :id path parameter as the client meant it. Echo routes on
// the escaped path when it differs from the plain one (a name with "/" in
// it), and its parameters are then still escaped.
func pathRef(c echo.Context) (string, error) {
	ref := c.Param("id")
	if raw := c.Request().URL.RawPath; raw != "" {
		plain, err := url.PathUnescape(ref)
		if err != nil {
			return "", domain.Errorf(domain.CodeInvalid, "the path's id or name %q is not properly escaped: %v", ref, err)
		}
		ref = plain
	}
	// No id or name holds these, and PostgreSQL refuses them in text: say
	// so rather than fail the lookup.
	if !utf8.ValidString(ref) || strings.ContainsRune(ref, 0) {
		return "", domain.Errorf(domain.CodeInvalid, "the path's id or name %q is not valid text (UTF-8 without NUL)", ref)
	}
	return ref, nil
}
