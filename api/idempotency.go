package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/ordoflow/ordo/domain"
)

// idempotencyKeys stores the first response to each POST sent with an
// Idempotency-Key header, in the idempotency_keys table. Keys are the
// actor's own (the request's token): two tokens that pick the same key
// never see each other's responses.
type idempotencyKeys struct {
	pool *pgxpool.Pool
}

// storedResponse is a response kept for replay.
type storedResponse struct {
	status      int
	contentType string
	body        []byte
}

// begin claims the actor's key for a request with this hash. It returns the stored
// response when the key was used before by the same request, and an error
// when the key belongs to another request or the first one is still being
// handled. A claim left by a process that died (older than a minute) is
// taken over.
func (k *idempotencyKeys) begin(ctx context.Context, actor, key string, hash []byte) (*storedResponse, error) {
	tag, err := k.pool.Exec(ctx, `INSERT INTO idempotency_keys (actor, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT (key, actor) DO NOTHING`, actor, key, hash)
	if err != nil {
		return nil, fmt.Errorf("claim idempotency key: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil, nil
	}
	var (
		stored []byte
		status *int
		ctype  *string
		body   []byte
		stale  bool
	)
	err = k.pool.QueryRow(ctx, `SELECT request_hash, status, content_type, body, created_at < now() - interval '1 minute' FROM idempotency_keys WHERE actor = $1 AND key = $2`, actor, key).
		Scan(&stored, &status, &ctype, &body, &stale)
	if errors.Is(err, pgx.ErrNoRows) {
		return k.begin(ctx, actor, key, hash) // deleted meanwhile: claim again
	}
	if err != nil {
		return nil, fmt.Errorf("read idempotency key: %w", err)
	}
	if !bytes.Equal(stored, hash) {
		return nil, domain.Errorf(domain.CodeConflict, "Idempotency-Key %q was already used for a different request", key)
	}
	if status != nil {
		r := &storedResponse{status: *status, body: body}
		if ctype != nil {
			r.contentType = *ctype
		}
		return r, nil
	}
	if stale {
		tag, err := k.pool.Exec(ctx, `UPDATE idempotency_keys SET created_at = now() WHERE actor = $1 AND key = $2 AND status IS NULL AND created_at < now() - interval '1 minute'`, actor, key)
		if err == nil && tag.RowsAffected() == 1 {
			return nil, nil
		}
	}
	return nil, domain.Errorf(domain.CodeConflict, "a request with Idempotency-Key %q is still being handled", key)
}

func (k *idempotencyKeys) finish(ctx context.Context, actor, key string, r storedResponse) error {
	_, err := k.pool.Exec(ctx, `UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5, completed_at = now() WHERE actor = $1 AND key = $2`,
		actor, key, r.status, r.contentType, r.body)
	return err
}

func (k *idempotencyKeys) abandon(ctx context.Context, actor, key string) error {
	_, err := k.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE actor = $1 AND key = $2 AND status IS NULL`, actor, key)
	return err
}

// idempotency replays the first response to a POST retried with the same
// Idempotency-Key by the same actor. Server errors (5xx) are not kept: the
// retry runs again.
func (s *server) idempotency(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		key := c.Request().Header.Get("Idempotency-Key")
		if key == "" || c.Request().Method != http.MethodPost {
			return next(c)
		}
		if len(key) > 255 {
			return domain.Invalid("Idempotency-Key", "at most 255 characters")
		}
		if !utf8.ValidString(key) || strings.ContainsRune(key, 0) {
			return domain.Invalid("Idempotency-Key", "must be UTF-8 text without NUL characters")
		}
		body, err := s.readBody(c)
		if err != nil {
			return err
		}
		h := sha256.New()
		fmt.Fprintf(h, "%s\n%s\n", c.Request().Method, c.Request().URL.Path)
		h.Write(body)
		ctx := c.Request().Context()
		actor := s.actor(c)
		prev, err := s.idem.begin(ctx, actor, key, h.Sum(nil))
		if err != nil {
			return err
		}
		if prev != nil {
			c.Response().Header().Set("Idempotent-Replayed", "true")
			if prev.contentType != "" {
				c.Response().Header().Set(echo.HeaderContentType, prev.contentType)
			}
			c.Response().WriteHeader(prev.status)
			_, err := c.Response().Write(prev.body)
			return err
		}
		rec := &recorder{ResponseWriter: c.Response().Writer}
		c.Response().Writer = rec
		if err := next(c); err != nil {
			c.Error(err) // written through the recorder
		}
		status := c.Response().Status
		done := context.WithoutCancel(ctx)
		if status >= 500 {
			if err := s.idem.abandon(done, actor, key); err != nil {
				s.log.Error("release idempotency key", "key", key, "err", err)
			}
			return nil
		}
		resp := storedResponse{status: status, contentType: c.Response().Header().Get(echo.HeaderContentType), body: rec.buf.Bytes()}
		if err := s.idem.finish(done, actor, key, resp); err != nil {
			s.log.Error("store idempotent response", "key", key, "status", strconv.Itoa(status), "err", err)
		}
		return nil
	}
}

// recorder copies a response body while it is written.
type recorder struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (r *recorder) Write(b []byte) (int, error) {
	r.buf.Write(b)
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(r.ResponseWriter).Hijack()
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
