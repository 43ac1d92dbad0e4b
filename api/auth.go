package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/ordoflow/ordo/domain"
)

// Scope says what an API token may do. Scopes are nested: run includes
// read, admin includes run.
type Scope string

const (
	// ScopeRead allows GET (and HEAD) requests: every list and page,
	// /metrics, River UI's pages and the UI's live updates.
	ScopeRead Scope = "read"
	// ScopeRun allows read, and starting, cancelling and retrying runs.
	ScopeRun Scope = "run"
	// ScopeAdmin allows everything: deployments, work queues, River UI's
	// actions on jobs.
	ScopeAdmin Scope = "admin"
)

var scopeRank = map[Scope]int{ScopeRead: 1, ScopeRun: 2, ScopeAdmin: 3}

// Scopes lists the scopes from the smallest to the largest.
var Scopes = []Scope{ScopeRead, ScopeRun, ScopeAdmin}

// ParseScope reads a scope name.
func ParseScope(s string) (Scope, error) {
	sc := Scope(strings.ToLower(strings.TrimSpace(s)))
	if scopeRank[sc] == 0 {
		return "", domain.Invalid("scope", "must be read, run or admin, got %q", s)
	}
	return sc, nil
}

// Allows reports whether a token of scope s may do what needs scope need.
func (s Scope) Allows(need Scope) bool {
	return scopeRank[need] > 0 && scopeRank[s] >= scopeRank[need]
}

// runScopeRoutes are the requests, other than reads, that a run token may
// make. Every other request that is not a read needs an admin token, so a
// new route is admin-only until it is listed here.
var runScopeRoutes = map[string]bool{
	"POST /api/v1/deployments/:id/runs": true,
	"POST /api/v1/runs/:id/cancel":      true,
	"POST /api/v1/runs/:id/retry":       true,
}

// openRoutes need no token: load balancers probe them.
var openRoutes = map[string]bool{
	"GET /healthz":  true,
	"HEAD /healthz": true,
	"GET /readyz":   true,
	"HEAD /readyz":  true,
}

// RequiredScope is the scope a request needs, by its method and the route
// it matched (Echo's path pattern, such as /api/v1/runs/:id); "" for the
// open health probes.
func RequiredScope(method, route string) Scope {
	key := method + " " + route
	switch {
	case openRoutes[key]:
		return ""
	case method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions:
		return ScopeRead
	case runScopeRoutes[key]:
		return ScopeRun
	}
	return ScopeAdmin
}

// Token is an API token as stored: everything but the token itself, which
// is shown once when it is created and never stored.
type Token struct {
	Name       string     `json:"name"`
	Scope      Scope      `json:"scope"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
}

// Actor is how events caused with the token name their actor.
func (t Token) Actor() string { return "token:" + t.Name }

// tokenPrefix starts every token, so that one is recognisable in a config
// file or a leak scanner.
const tokenPrefix = "ordo_"

// maxTokenLength bounds what is hashed and looked up from a request.
const maxTokenLength = 256

var tokenEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newTokenSecret returns a new token: 256 random bits.
func newTokenSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return tokenPrefix + strings.ToLower(tokenEncoding.EncodeToString(b)), nil
}

// tokenHash is what is stored of a token. A plain SHA-256 is enough: the
// token has 256 random bits, so there is nothing to guess from the hash.
func tokenHash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// tokenDB runs SQL on a pool, a connection or a transaction alike.
type tokenDB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const tokenColumns = `name, scope, created_at, last_used_at, revoked_at`

func scanToken(row pgx.Row) (Token, error) {
	var t Token
	err := row.Scan(&t.Name, &t.Scope, &t.CreatedAt, &t.LastUsedAt, &t.RevokedAt)
	return t, err
}

// TokenCreate stores a new token named name with scope and returns the
// token itself, which exists nowhere else: show it once. Names are unique
// forever, revoked ones included, so that the actor token:NAME in the
// event log always means one token.
func TokenCreate(ctx context.Context, db tokenDB, name string, scope Scope) (string, Token, error) {
	if !domain.ValidName(name) {
		return "", Token{}, domain.Invalid("name", "%q is not a valid token name: use 1 to 100 letters, digits, '_', '.' or '-', starting with a letter or digit", name)
	}
	if scopeRank[scope] == 0 {
		return "", Token{}, domain.Invalid("scope", "must be read, run or admin, got %q", scope)
	}
	secret, err := newTokenSecret()
	if err != nil {
		return "", Token{}, err
	}
	t, err := scanToken(db.QueryRow(ctx, `
INSERT INTO api_tokens (name, token_sha256, scope) VALUES ($1, $2, $3)
RETURNING `+tokenColumns, name, tokenHash(secret), string(scope)))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return "", Token{}, domain.Errorf(domain.CodeConflict, "a token named %q already exists (names of revoked tokens are not reused either): choose another name", name)
	}
	if err != nil {
		return "", Token{}, fmt.Errorf("create token: %w", err)
	}
	return secret, t, nil
}

// TokenList returns every token, revoked ones too, oldest first.
func TokenList(ctx context.Context, db tokenDB) ([]Token, error) {
	rows, err := db.Query(ctx, `SELECT `+tokenColumns+` FROM api_tokens ORDER BY created_at, name`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	tokens, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Token, error) { return scanToken(r) })
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return tokens, nil
}

// TokenRevoke revokes the token named name; revoking it again keeps the
// first revocation time. Servers stop accepting it within their cache TTL.
func TokenRevoke(ctx context.Context, db tokenDB, name string) (Token, error) {
	t, err := scanToken(db.QueryRow(ctx, `
UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE name = $1
RETURNING `+tokenColumns, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return Token{}, domain.Errorf(domain.CodeNotFound, "no token named %q", name)
	}
	if err != nil {
		return Token{}, fmt.Errorf("revoke token: %w", err)
	}
	return t, nil
}

// AuthOptions configure Auth.
type AuthOptions struct {
	// CacheTTL is how long a server trusts what it read about a token (and
	// whether any token exists) before reading it again: a revoked token
	// keeps working on a server for at most this long, and auth starts
	// being required at most this long after the first token is created.
	// Defaults to 5s.
	CacheTTL time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Auth checks the API tokens of requests. While no active token exists,
// every request is let through (a fresh install works without setup);
// from the first token on, every request but the health probes needs one.
type Auth struct {
	pool *pgxpool.Pool
	ttl  time.Duration
	log  *slog.Logger
	now  func() time.Time

	mu       sync.Mutex
	tokens   map[string]cachedToken // by hash
	required cachedFlag
	touched  map[string]time.Time // last last_used_at write, by name
}

type cachedToken struct {
	tok   Token
	found bool // false: no such token
	at    time.Time
}

type cachedFlag struct {
	on, known bool
	at        time.Time
}

// maxCachedTokens bounds the cache, which also remembers unknown tokens
// (so that guessing costs no database round trip per request).
const maxCachedTokens = 10000

// lastUsedEvery is how often a server records that a token was used.
const lastUsedEvery = time.Minute

// NewAuth returns an Auth on the database that holds api_tokens.
func NewAuth(pool *pgxpool.Pool, opts AuthOptions) *Auth {
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Auth{pool: pool, ttl: opts.CacheTTL, log: opts.Logger, now: time.Now,
		tokens: map[string]cachedToken{}, touched: map[string]time.Time{}}
}

// tokenKey is the context key of the request's token.
type tokenKey struct{}

// TokenFromContext returns the token a request was authenticated with.
func TokenFromContext(ctx context.Context) (Token, bool) {
	t, ok := ctx.Value(tokenKey{}).(Token)
	return t, ok
}

// actorOf is the default Options.Actor: the request's token, else "api".
func actorOf(r *http.Request) string {
	if t, ok := TokenFromContext(r.Context()); ok {
		return t.Actor()
	}
	return "api"
}

// Check authenticates a request that needs scope need ("" for none). It
// returns the request with its token in the context, or an error with
// code unauthorized (no, unknown or revoked token), forbidden (a scope
// too small) or unavailable (the database cannot be reached: it fails
// closed).
func (a *Auth) Check(r *http.Request, need Scope) (*http.Request, error) {
	if need == "" {
		return r, nil
	}
	ctx := r.Context()
	secret, given := credential(r)
	if given {
		tok, found, err := a.lookup(ctx, secret)
		if err != nil {
			return nil, a.unavailable(err)
		}
		if found && tok.RevokedAt == nil {
			if !tok.Scope.Allows(need) {
				return nil, domain.Errorf(domain.CodeForbidden, "token %q has scope %s; %s %s needs scope %s", tok.Name, tok.Scope, r.Method, r.URL.Path, need)
			}
			a.touch(ctx, tok.Name)
			return r.WithContext(context.WithValue(ctx, tokenKey{}, tok)), nil
		}
	}
	on, err := a.isRequired(ctx)
	if err != nil {
		return nil, a.unavailable(err)
	}
	switch {
	case !on:
		return r, nil // no active token: the server is open
	case given:
		return nil, domain.Errorf(domain.CodeUnauthorized, "the API token is unknown or revoked")
	}
	return nil, domain.Errorf(domain.CodeUnauthorized, "this server requires an API token: send it as Authorization: Bearer TOKEN (ordo tokens create makes one; the CLI reads ORDO_API_TOKEN)")
}

func (a *Auth) unavailable(err error) error {
	a.log.Error("check api token", "err", err)
	return domain.Errorf(domain.CodeUnavailable, "the API token cannot be checked now: the database cannot be reached")
}

// riverUICookie carries the token to River UI, whose pages call its own
// API without an Authorization header, and to the downloads of outputs,
// which the UI shows as images and links. The Ordo UI sets it,
// SameSite=Strict, for those paths only, when the user gives a token.
const riverUICookie = "ordo_api_token"

// cookieAllowed reports whether a request may send its token as the
// cookie: River UI, and reading an output.
func cookieAllowed(r *http.Request) bool {
	p := r.URL.Path
	if strings.HasPrefix(p, riverUIPrefix+"/") || p == riverUIPrefix {
		return true
	}
	rest, ok := strings.CutPrefix(p, "/api/v1/task-runs/")
	return ok && (r.Method == http.MethodGet || r.Method == http.MethodHead) && strings.Contains(rest, "/outputs/")
}

// credential returns the token a request sends: the Authorization: Bearer
// header, or for River UI, the cookie. A request that sends an
// Authorization header of another kind sends a wrong token.
func credential(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, _ := strings.Cut(h, " ")
		tok = strings.TrimSpace(tok)
		if !strings.EqualFold(scheme, "Bearer") || tok == "" || len(tok) > maxTokenLength {
			return "", true
		}
		return tok, true
	}
	if cookieAllowed(r) {
		// a cookie travels with cross-site requests too: only same-origin
		// ones (or those of clients that are not browsers) may use it
		if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
			return "", false
		}
		if c, err := r.Cookie(riverUICookie); err == nil && c.Value != "" && len(c.Value) <= maxTokenLength {
			return c.Value, true
		}
	}
	return "", false
}

// lookup finds a token by its hash, from the cache when fresh.
func (a *Auth) lookup(ctx context.Context, secret string) (Token, bool, error) {
	if secret == "" {
		return Token{}, false, nil
	}
	key := string(tokenHash(secret))
	now := a.now()
	a.mu.Lock()
	c, ok := a.tokens[key]
	a.mu.Unlock()
	if ok && now.Sub(c.at) < a.ttl {
		return c.tok, c.found, nil
	}
	tok, err := scanToken(a.pool.QueryRow(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE token_sha256 = $1`, []byte(key)))
	found := err == nil
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	if err != nil {
		return Token{}, false, err
	}
	a.mu.Lock()
	if len(a.tokens) >= maxCachedTokens {
		clear(a.tokens)
	}
	a.tokens[key] = cachedToken{tok: tok, found: found, at: now}
	a.mu.Unlock()
	return tok, found, nil
}

// isRequired reports whether any active token exists, from the cache when
// fresh.
func (a *Auth) isRequired(ctx context.Context) (bool, error) {
	now := a.now()
	a.mu.Lock()
	c := a.required
	a.mu.Unlock()
	if c.known && now.Sub(c.at) < a.ttl {
		return c.on, nil
	}
	var on bool
	if err := a.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM api_tokens WHERE revoked_at IS NULL)`).Scan(&on); err != nil {
		return false, err
	}
	a.mu.Lock()
	a.required = cachedFlag{on: on, known: true, at: now}
	a.mu.Unlock()
	return on, nil
}

// touch records that a token was used, at most once per lastUsedEvery.
func (a *Auth) touch(ctx context.Context, name string) {
	now := a.now()
	a.mu.Lock()
	if now.Sub(a.touched[name]) < lastUsedEvery {
		a.mu.Unlock()
		return
	}
	if len(a.touched) >= maxCachedTokens {
		clear(a.touched)
	}
	a.touched[name] = now
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if _, err := a.pool.Exec(ctx, `UPDATE api_tokens SET last_used_at = now() WHERE name = $1`, name); err != nil {
		a.log.Warn("record api token use", "token", name, "err", err)
	}
}

// authenticate is the API's auth middleware: it needs the route Echo
// matched, so it runs after routing.
func (s *server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	if s.opts.Auth == nil {
		return next
	}
	return func(c echo.Context) error {
		r := c.Request()
		route := c.Path()
		if route == "" {
			route = r.URL.Path
		}
		r, err := s.opts.Auth.Check(r, RequiredScope(r.Method, route))
		if err != nil {
			if domain.ErrorCode(err) == domain.CodeUnauthorized {
				c.Response().Header().Set("WWW-Authenticate", `Bearer realm="ordo"`)
			}
			return err
		}
		c.SetRequest(r)
		return next(c)
	}
}

// uiDataPrefix is where the web UI serves data of its own (its live
// stream); the rest of the UI is its page shell and static assets.
const uiDataPrefix = "/ui/"

// ProtectUI guards the web UI's handler: its page shells and static assets
// stay open, since they hold no data and show the token dialog, and every
// data route under /ui/ (the live stream) needs a read token, answered
// like the API's errors.
func (a *Auth) ProtectUI(ui http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, uiDataPrefix) {
			ui.ServeHTTP(w, r)
			return
		}
		r, err := a.Check(r, ScopeRead)
		if err != nil {
			writeErrorEnvelope(w, err)
			return
		}
		ui.ServeHTTP(w, r)
	})
}

// writeErrorEnvelope answers a *domain.Error outside Echo.
func writeErrorEnvelope(w http.ResponseWriter, err error) {
	var de *domain.Error
	if !errors.As(err, &de) {
		de = domain.Errorf(domain.CodeInternal, "internal error")
	}
	status, ok := statusByCode[de.Code]
	if !ok {
		status = http.StatusInternalServerError
	}
	if de.Code == domain.CodeUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ordo"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{errorJSON{Code: de.Code, Message: de.Error(), Details: nonNilDetails(de.Details)}})
}
