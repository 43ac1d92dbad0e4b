package api

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/projections"
)

// OutputURL is the path that serves one output of a task run: each element
// of the name (names are paths with slashes) escaped on its own.
func OutputURL(taskRunID uuid.UUID, name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return "/api/v1/task-runs/" + taskRunID.String() + "/outputs/" + strings.Join(parts, "/")
}

func (s *server) runOutputs(c echo.Context) error {
	id, err := s.pathRunID(c)
	if err != nil {
		return err
	}
	if q := s.query(c); q.err != nil {
		return q.err
	}
	items, err := s.opts.Reads.RunOutputs(c.Request().Context(), id)
	if err != nil {
		return err
	}
	for i := range items {
		items[i].DownloadURL = OutputURL(items[i].TaskRunID, items[i].Name)
	}
	return c.JSON(http.StatusOK, projections.Page[projections.RunOutput]{Items: items})
}

func (s *server) deploymentMetrics(c echo.Context) error {
	id, err := s.pathDeploymentID(c)
	if err != nil {
		return err
	}
	q := s.query(c, "limit")
	limit := q.int("limit")
	if q.err != nil {
		return q.err
	}
	if limit == 0 && q.str("limit") != "" {
		return domain.Invalid("limit", "must be between 1 and %d, got 0", projections.MaxMetricPoints)
	}
	page, err := s.opts.Reads.DeploymentMetrics(c.Request().Context(), id, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

// outputCSP keeps a task's file from running script in the UI's origin
// when it is opened (HTML, SVG): it is shown as a sandboxed document.
const outputCSP = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; media-src 'self'"

// taskRunOutput serves the bytes of one output (HEAD: only its headers):
// ETag (the quoted sha256) and If-None-Match, one Range, ?download=1 for an
// attachment.
func (s *server) taskRunOutput(c echo.Context) error {
	ref, err := pathRef(c)
	if err != nil {
		return err
	}
	id, err := uuid.Parse(ref)
	if err != nil {
		return domain.Errorf(domain.CodeInvalid, "the path's task run id %q is not a UUID", ref)
	}
	name, err := pathOutputName(c)
	if err != nil {
		return err
	}
	q := s.query(c, "download")
	download := q.bool("download")
	if q.err != nil {
		return q.err
	}
	if s.opts.Blobs == nil {
		return notImplemented("downloading outputs (no blob store)")
	}
	ctx := c.Request().Context()
	out, err := s.opts.Reads.TaskRunOutput(ctx, id, name)
	if err != nil {
		return err
	}

	h := c.Response().Header()
	etag := `"` + out.SHA256 + `"`
	h.Set("ETag", etag)
	h.Set("Accept-Ranges", "bytes")
	h.Set("Cache-Control", "private, no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", outputCSP)
	if etagMatches(c.Request().Header.Get("If-None-Match"), out.SHA256) {
		return c.NoContent(http.StatusNotModified)
	}

	off, n, partial := int64(0), out.Size, false
	if rh := c.Request().Header.Get("Range"); rh != "" && ifRangeHolds(c.Request().Header.Get("If-Range"), out.SHA256) {
		start, length, ok, err := parseRange(rh, out.Size)
		if err != nil {
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", out.Size))
			return err
		}
		if ok {
			off, n, partial = start, length, true
		}
	}
	var body io.ReadCloser = http.NoBody
	if c.Request().Method != http.MethodHead {
		body, err = s.opts.Blobs.Get(ctx, out.SHA256, off, n)
		if errors.Is(err, blobstore.ErrNotFound) {
			return domain.Errorf(domain.CodeNotFound, "output %q of task run %s: its blob %s is not in the blob store", name, id, out.SHA256)
		}
		if err != nil {
			return fmt.Errorf("read output %q of task run %s: %w", name, id, err)
		}
	}
	defer body.Close()
	// Set once no error can follow: an error keeps Echo's JSON type.
	h.Set(echo.HeaderContentType, outputMediaType(out.MediaType))
	if download {
		h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(out.Name)}))
	}
	h.Set(echo.HeaderContentLength, strconv.FormatInt(n, 10))
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, out.Size))
	}
	c.Response().WriteHeader(status)
	if c.Request().Method == http.MethodHead {
		return nil
	}
	if _, err := io.CopyN(c.Response(), body, n); err != nil {
		// The status is sent: all that is left is to cut the response
		// short. A client that went away (a preview closed) is no news.
		if ctx.Err() == nil {
			s.log.Warn("serve output", "task_run", id, "output", name, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
	return nil
}

// pathOutputName is the output name at the end of the path, unescaped as
// pathRef unescapes an id.
func pathOutputName(c echo.Context) (string, error) {
	name := c.Param("*")
	if c.Request().URL.RawPath != "" {
		plain, err := url.PathUnescape(name)
		if err != nil {
			return "", domain.Errorf(domain.CodeInvalid, "the output name %q is not properly escaped: %v", name, err)
		}
		name = plain
	}
	if err := domain.ValidateOutputName(name); err != nil {
		return "", domain.Errorf(domain.CodeInvalid, "%v", err)
	}
	return name, nil
}

// outputMediaType is the Content-Type an output is served with: its media
// type when it is a valid one, else bytes.
func outputMediaType(mt string) string {
	if t, params, err := mime.ParseMediaType(mt); err == nil {
		return mime.FormatMediaType(t, params)
	}
	return "application/octet-stream"
}

// etagMatches reports whether an If-None-Match header names the output.
func etagMatches(header, digest string) bool {
	for tag := range strings.SplitSeq(header, ",") {
		tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
		if tag == "*" || tag == `"`+digest+`"` {
			return true
		}
	}
	return false
}

// ifRangeHolds reports whether a Range applies: no If-Range, or one that
// names this content (a date cannot, the output has no modification time).
func ifRangeHolds(header, digest string) bool {
	return header == "" || strings.TrimSpace(header) == `"`+digest+`"`
}

// parseRange reads a Range header of one byte range against a size: the
// start and length, or ok false when the header is to be ignored (not of
// bytes, or several ranges: the whole output is sent). A range that starts
// past the end is an error (416).
func parseRange(header string, size int64) (start, length int64, ok bool, err error) {
	spec, found := strings.CutPrefix(header, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, nil
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, nil
	}
	unsatisfiable := domain.Errorf(codeRangeNotSatisfiable, "range %q is outside the output's %d bytes", spec, size)
	if first == "" { // the last n bytes
		n, perr := strconv.ParseInt(last, 10, 64)
		if perr != nil || n < 0 {
			return 0, 0, false, nil
		}
		if n == 0 || size == 0 {
			return 0, 0, false, unsatisfiable
		}
		n = min(n, size)
		return size - n, n, true, nil
	}
	a, perr := strconv.ParseInt(first, 10, 64)
	if perr != nil || a < 0 {
		return 0, 0, false, nil
	}
	b := size - 1
	if last != "" {
		if b, perr = strconv.ParseInt(last, 10, 64); perr != nil || b < a {
			return 0, 0, false, nil
		}
		b = min(b, size-1)
	}
	if a >= size {
		return 0, 0, false, unsatisfiable
	}
	return a, b - a + 1, true, nil
}
