package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/api"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// endpoint is one request of the auth matrix.
type endpoint struct {
	method, route, path string
	body                []byte
	want                api.Scope // "" for an open endpoint
}

func (e endpoint) String() string { return e.method + " " + e.path }

// wantScope states the auth rules independently of the implementation:
// the health probes are open, reads need read, starting, cancelling and
// retrying runs need run, and everything else needs admin.
func wantScope(method, route string) api.Scope {
	switch {
	case route == "/healthz" || route == "/readyz":
		return ""
	case method == http.MethodGet || method == http.MethodHead:
		return api.ScopeRead
	case method == http.MethodPost && (route == "/api/v1/deployments/:id/runs" || route == "/api/v1/runs/:id/cancel" || route == "/api/v1/runs/:id/retry"):
		return api.ScopeRun
	}
	return api.ScopeAdmin
}

// matrixEndpoints is every route the API's Echo serves (so that a new route
// is in the matrix without anyone adding it), with its parameters filled
// in, and the web UI's: its page shell and assets are open, its live
// stream is not.
func matrixEndpoints(t *testing.T, b fullBundle) []endpoint {
	t.Helper()
	var out []endpoint
	seen := map[string]bool{}
	for _, r := range b.routes {
		if seen[r.Method+" "+r.Path] || strings.HasPrefix(r.Method, "echo_") {
			continue
		}
		seen[r.Method+" "+r.Path] = true
		path := r.Path
		path = strings.ReplaceAll(path, ":id", uuid.NewString())
		path = strings.ReplaceAll(path, ":name", "q1")
		path = strings.ReplaceAll(path, ":firing", uuid.NewString())
		path = strings.ReplaceAll(path, ":action", "0")
		if strings.HasSuffix(path, "*") {
			sub := "api/jobs?state=available"
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				sub = "api/jobs/cancel"
			}
			path = strings.TrimSuffix(path, "*") + sub
		}
		if strings.ContainsAny(path, ":*") {
			t.Fatalf("route %s %s has a parameter the matrix does not know how to fill", r.Method, r.Path)
		}
		var body []byte
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodDelete {
			body = []byte(`{}`)
		}
		out = append(out, endpoint{method: r.Method, route: r.Path, path: path, body: body, want: wantScope(r.Method, r.Path)})
	}
	if len(out) < 25 {
		t.Fatalf("only %d API routes: the matrix should see every route", len(out))
	}
	ui := []endpoint{
		{method: "GET", route: "ui /", path: "/"},
		{method: "GET", route: "ui /runs", path: "/runs"},
		{method: "GET", route: "ui /runs/{id}", path: "/runs/" + uuid.NewString()},
		{method: "GET", route: "ui /assets/", path: "/assets/app.css"},
		{method: "GET", route: "ui /ui/live", path: "/ui/live", want: api.ScopeRead},
		{method: "GET", route: "ui /ui/other", path: "/ui/anything-else", want: api.ScopeRead},
		// no such route: a token is needed before the client learns that
		{method: "GET", route: "unknown", path: "/api/v1/no-such-thing", want: api.ScopeRead},
		{method: "POST", route: "unknown", path: "/api/v1/no-such-thing", body: []byte(`{}`), want: api.ScopeAdmin},
		{method: "GET", route: "unknown", path: "/riverui-no-such", want: api.ScopeRead},
	}
	return append(out, ui...)
}

// checkEnvelope fails unless r is an error envelope with code.
func checkEnvelope(t *testing.T, what string, r response, code domain.Code) {
	t.Helper()
	if r.status != map[domain.Code]int{domain.CodeUnauthorized: 401, domain.CodeForbidden: 403}[code] {
		t.Errorf("%s: status %d, want %s (%s)", what, r.status, code, r.body)
		return
	}
	if len(r.body) == 0 { // HEAD
		return
	}
	var env errorEnvelope
	if err := json.Unmarshal(r.body, &env); err != nil || env.Error.Code != string(code) || env.Error.Message == "" || env.Error.Details == nil {
		t.Errorf("%s: body %s is not a %s envelope (%v)", what, r.body, code, err)
	}
	if code == domain.CodeUnauthorized && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("%s: 401 without WWW-Authenticate: Bearer", what)
	}
}

// TestAuthMatrix sends every endpoint with no token, a wrong token, a
// malformed header, a revoked token and a token of each scope, over HTTP
// against the whole server, and checks 401, 403 or passage, and that none
// of it changed any table.
func TestAuthMatrix(t *testing.T) {
	t.Parallel()
	b := fullSetup(t, true)
	ctx := context.Background()
	tokens := map[api.Scope]string{}
	for _, sc := range api.Scopes {
		secret, _, err := api.TokenCreate(ctx, b.pool, "matrix-"+string(sc), sc)
		if err != nil {
			t.Fatal(err)
		}
		tokens[sc] = secret
	}
	revoked, _, err := api.TokenCreate(ctx, b.pool, "matrix-revoked", api.ScopeAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.TokenRevoke(ctx, b.pool, "matrix-revoked"); err != nil {
		t.Fatal(err)
	}
	before := tableCounts(t, b.bundle)

	type credential struct {
		name   string
		header []string
		scope  api.Scope // "" for none that is valid
	}
	creds := []credential{
		{name: "NoToken"},
		{name: "WrongToken", header: bearer("ordo_" + strings.Repeat("a", 52))},
		{name: "NotBearer", header: []string{"Authorization", "Basic dXNlcjpwYXNz"}},
		{name: "EmptyBearer", header: []string{"Authorization", "Bearer "}},
		{name: "RevokedToken", header: bearer(revoked)},
		{name: "Read", header: bearer(tokens[api.ScopeRead]), scope: api.ScopeRead},
		{name: "Run", header: bearer(tokens[api.ScopeRun]), scope: api.ScopeRun},
		{name: "Admin", header: bearer(tokens[api.ScopeAdmin]), scope: api.ScopeAdmin},
	}
	eps := matrixEndpoints(t, b)
	counts := map[string]int{}
	for _, c := range creds {
		for _, ep := range eps {
			r := b.send(t, ep.method, ep.path, ep.body, c.header...)
			what := fmt.Sprintf("%s %s", c.name, ep)
			switch {
			case ep.want == "":
				if r.status == 401 || r.status == 403 {
					t.Errorf("%s: open endpoint answered %d", what, r.status)
				}
				counts["open"]++
			case c.scope == "":
				checkEnvelope(t, what, r, domain.CodeUnauthorized)
				counts["401"]++
			case !c.scope.Allows(ep.want):
				checkEnvelope(t, what, r, domain.CodeForbidden)
				counts["403"]++
			default:
				if r.status == 401 || r.status == 403 {
					t.Errorf("%s: scope %s should pass, got %d %s", what, c.scope, r.status, r.body)
				}
				counts["passed"]++
			}
		}
	}
	t.Logf("auth matrix: %d endpoints x %d credentials: %v", len(eps), len(creds), counts)
	sameCounts(t, before, tableCounts(t, b.bundle))
}

// TestAuthTokenActorOnEvents: the events a request causes name its token.
func TestAuthTokenActorOnEvents(t *testing.T) {
	t.Parallel()
	b := fullSetup(t, true)
	ctx := context.Background()
	admin, _, err := api.TokenCreate(ctx, b.pool, "deployer", api.ScopeAdmin)
	if err != nil {
		t.Fatal(err)
	}
	run, _, err := api.TokenCreate(ctx, b.pool, "ci", api.ScopeRun)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(deploymentBody("actor-test", func(d map[string]any) { delete(d, "schedule") }))
	r := b.send(t, "POST", "/api/v1/deployments", body, bearer(admin)...)
	if r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	var d struct{ ID string }
	r.decode(t, &d)
	r = b.send(t, "POST", "/api/v1/deployments/"+d.ID+"/runs", []byte(`{}`), bearer(run)...)
	if r.status != 201 {
		t.Fatalf("run: %d %s", r.status, r.body)
	}
	var fr struct{ ID string }
	r.decode(t, &fr)
	if r = b.send(t, "POST", "/api/v1/runs/"+fr.ID+"/cancel", nil, bearer(run)...); r.status != 200 {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}

	actors := func(streamID string) map[string]string {
		rows, err := b.pool.Query(ctx, `SELECT type, metadata->>'actor' FROM events WHERE stream_id = $1 ORDER BY version`, streamID)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]string{}
		for rows.Next() {
			var typ, actor string
			if err := rows.Scan(&typ, &actor); err != nil {
				t.Fatal(err)
			}
			out[typ] = actor
		}
		return out
	}
	if got := actors(d.ID)["DeploymentCreated"]; got != "token:deployer" {
		t.Errorf("DeploymentCreated actor %q, want token:deployer", got)
	}
	got := actors(fr.ID)
	if got["FlowRunCreated"] != "token:ci" || got["FlowRunCancelled"] != "token:ci" {
		t.Errorf("flow run actors %v, want token:ci for FlowRunCreated and FlowRunCancelled", got)
	}
}

// TestAuthOpenUntilFirstToken: a server without tokens is open and its
// events name the actor "api"; the first token closes it within the
// cache TTL.
func TestAuthOpenUntilFirstToken(t *testing.T) {
	t.Parallel()
	b := fullSetup(t, true)
	if r := b.send(t, "GET", "/api/v1/runs", nil); r.status != 200 {
		t.Fatalf("open server: %d %s", r.status, r.body)
	}
	if r := b.send(t, "GET", "/metrics", nil); r.status != 200 {
		t.Fatalf("open server /metrics: %d", r.status)
	}
	body, _ := json.Marshal(deploymentBody("open", nil))
	if r := b.send(t, "POST", "/api/v1/deployments", body); r.status != 201 {
		t.Fatalf("deploy on an open server: %d %s", r.status, r.body)
	}
	var actor string
	if err := b.pool.QueryRow(context.Background(), `SELECT metadata->>'actor' FROM events WHERE type = 'DeploymentCreated'`).Scan(&actor); err != nil || actor != "api" {
		t.Fatalf("actor %q (%v), want api", actor, err)
	}
	if _, _, err := api.TokenCreate(context.Background(), b.pool, "first", api.ScopeRead); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		r := b.send(t, "GET", "/api/v1/runs", nil)
		if r.status == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d 2s after the first token was created", r.status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := b.send(t, "GET", "/healthz", nil); r.status != 200 {
		t.Fatalf("/healthz must stay open: %d", r.status)
	}
}

// TestAuthRevokedTokenStopsWithinTTL: a token revoked while servers cache
// it is refused within the cache TTL (100ms here, 5s by default).
func TestAuthRevokedTokenStopsWithinTTL(t *testing.T) {
	t.Parallel()
	b := fullSetup(t, true)
	ctx := context.Background()
	secret, _, err := api.TokenCreate(ctx, b.pool, "soon-gone", api.ScopeRead)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := api.TokenCreate(ctx, b.pool, "stays", api.ScopeRead); err != nil {
		t.Fatal(err)
	}
	if r := b.send(t, "GET", "/api/v1/runs", nil, bearer(secret)...); r.status != 200 {
		t.Fatalf("before revoke: %d %s", r.status, r.body)
	}
	if _, err := api.TokenRevoke(ctx, b.pool, "soon-gone"); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	for {
		r := b.send(t, "GET", "/api/v1/runs", nil, bearer(secret)...)
		if r.status == 401 {
			break
		}
		if time.Since(revokedAt) > time.Second {
			t.Fatalf("a revoked token still works %s later (TTL 100ms): %d", time.Since(revokedAt), r.status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("revoked token refused %s after revocation", time.Since(revokedAt).Round(time.Millisecond))
}

// TestAuthLastUsedAndRiverUICookie: a server records when a token was
// used; River UI, whose pages cannot send a header, takes the token from
// a cookie, but only from same-origin requests and only under /riverui.
func TestAuthLastUsedAndRiverUICookie(t *testing.T) {
	t.Parallel()
	b := fullSetup(t, true)
	ctx := context.Background()
	secret, _, err := api.TokenCreate(ctx, b.pool, "viewer", api.ScopeRead)
	if err != nil {
		t.Fatal(err)
	}
	list, err := api.TokenList(ctx, b.pool)
	if err != nil || len(list) != 1 || list[0].LastUsedAt != nil {
		t.Fatalf("before use: %+v %v", list, err)
	}
	cookie := []string{"Cookie", "ordo_api_token=" + secret}
	if r := b.send(t, "GET", "/riverui/", nil, cookie...); r.status != 200 {
		t.Fatalf("river ui with the cookie: %d %s", r.status, r.body)
	}
	if r := b.send(t, "GET", "/riverui/", nil, append(cookie, "Sec-Fetch-Site", "cross-site")...); r.status != 401 {
		t.Fatalf("river ui with the cookie from another site: %d, want 401", r.status)
	}
	if r := b.send(t, "GET", "/api/v1/runs", nil, cookie...); r.status != 401 {
		t.Fatalf("the API with only the cookie: %d, want 401", r.status)
	}
	if r := b.send(t, "GET", "/riverui/", nil); r.status != 401 {
		t.Fatalf("river ui without a token: %d, want 401", r.status)
	}
	list, err = api.TokenList(ctx, b.pool)
	if err != nil || list[0].LastUsedAt == nil {
		t.Fatalf("after use, last_used_at is not set: %+v %v", list, err)
	}
}

// TestTokenStore: tokens are stored as hashes, names are unique forever,
// bad names and scopes are refused.
func TestTokenStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t)
	secret, tok, err := api.TokenCreate(ctx, pool, "ci", api.ScopeRun)
	if err != nil || tok.Name != "ci" || tok.Scope != api.ScopeRun || tok.RevokedAt != nil {
		t.Fatalf("create: %+v %v", tok, err)
	}
	if !strings.HasPrefix(secret, "ordo_") || len(secret) < 50 {
		t.Fatalf("token %q: want ordo_ and 256 bits", secret)
	}
	var stored int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM api_tokens WHERE position(convert_to($1, 'UTF8') in token_sha256) > 0 OR token_sha256 = convert_to($1, 'UTF8')`, secret).Scan(&stored); err != nil || stored != 0 {
		t.Fatalf("the token itself is stored (%d, %v)", stored, err)
	}
	var hashed bool
	if err := pool.QueryRow(ctx, `SELECT token_sha256 = sha256(convert_to($1, 'UTF8')) FROM api_tokens WHERE name = 'ci'`, secret).Scan(&hashed); err != nil || !hashed {
		t.Fatalf("token_sha256 is not the SHA-256 of the token (%v)", err)
	}
	if _, _, err := api.TokenCreate(ctx, pool, "ci", api.ScopeRead); domain.ErrorCode(err) != domain.CodeConflict {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := api.TokenRevoke(ctx, pool, "ci"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := api.TokenCreate(ctx, pool, "ci", api.ScopeRead); domain.ErrorCode(err) != domain.CodeConflict {
		t.Fatalf("reusing a revoked name: %v", err)
	}
	if _, _, err := api.TokenCreate(ctx, pool, "no spaces", api.ScopeRead); domain.ErrorCode(err) != domain.CodeInvalid {
		t.Fatalf("bad name: %v", err)
	}
	if _, _, err := api.TokenCreate(ctx, pool, "x", api.Scope("root")); domain.ErrorCode(err) != domain.CodeInvalid {
		t.Fatalf("bad scope: %v", err)
	}
	if _, err := api.TokenRevoke(ctx, pool, "nobody"); domain.ErrorCode(err) != domain.CodeNotFound {
		t.Fatalf("revoke unknown: %v", err)
	}
	first, _ := api.TokenList(ctx, pool)
	again, err := api.TokenRevoke(ctx, pool, "ci")
	if err != nil || !again.RevokedAt.Equal(*first[0].RevokedAt) {
		t.Fatalf("revoking twice must keep the first time: %v %v", again.RevokedAt, first[0].RevokedAt)
	}
}

// TestAuthFailsClosed: when the database cannot be reached, requests are
// refused as unavailable, not let through.
func TestAuthFailsClosed(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	auth := api.NewAuth(pool, api.AuthOptions{})
	pool.Close()
	for _, h := range [][]string{nil, bearer("ordo_whatever")} {
		req := httptest.NewRequest("GET", "/api/v1/runs", nil)
		if len(h) == 2 {
			req.Header.Set(h[0], h[1])
		}
		if _, err := auth.Check(req, api.ScopeRead); domain.ErrorCode(err) != domain.CodeUnavailable {
			t.Errorf("with the database closed, %v: %v, want unavailable", h, err)
		}
	}
}

func TestRequiredScope(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		method, route string
		want          api.Scope
	}{
		{"GET", "/healthz", ""},
		{"GET", "/readyz", ""},
		{"GET", "/metrics", api.ScopeRead},
		{"GET", "/api/v1/openapi.json", api.ScopeRead},
		{"HEAD", "/riverui/*", api.ScopeRead},
		{"POST", "/api/v1/deployments/:id/runs", api.ScopeRun},
		{"POST", "/api/v1/runs/:id/cancel", api.ScopeRun},
		{"POST", "/api/v1/runs/:id/retry", api.ScopeRun},
		{"POST", "/api/v1/deployments", api.ScopeAdmin},
		{"DELETE", "/api/v1/deployments/:id", api.ScopeAdmin},
		{"POST", "/api/v1/work-queues/:name/pause", api.ScopeAdmin},
		{"POST", "/riverui/*", api.ScopeAdmin},
		{"POST", "/healthz", api.ScopeAdmin},
		{"PUT", "/api/v1/some-future-route", api.ScopeAdmin},
	} {
		if got := api.RequiredScope(c.method, c.route); got != c.want {
			t.Errorf("%s %s: %q, want %q", c.method, c.route, got, c.want)
		}
	}
}

// TestAuthUIPathTricks: spellings of the live stream's path that dodge the
// /ui/ prefix never reach it without a token.
func TestAuthUIPathTricks(t *testing.T) {
	t.Parallel()
	b := fullSetup(t, true)
	if _, _, err := api.TokenCreate(context.Background(), b.pool, "someone", api.ScopeAdmin); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/ui/live", "//ui/live", "/./ui/live", "/ui/./live", "/ui%2flive", "/x/../ui/live", "/ui//live", "/%75i/live"} {
		r := b.send(t, "GET", p, nil)
		if r.status == 200 && strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") {
			t.Errorf("GET %s without a token streams live updates", p)
		}
		if r.status < 300 && r.status != 200 {
			t.Errorf("GET %s: %d", p, r.status)
		}
	}
}
