// Package ui is Ordo's web UI: a few HTML pages and small vanilla
// JavaScript modules with SVG, embedded in the binary, that read and act
// through the JSON API under /api/v1. Nothing is fetched from the internet
// and there is no build step: the files under static/ are served as written.
//
// Its one endpoint of its own, /ui/live, tails the event log and tells open
// pages which runs and deployments changed (Server-Sent Events); pages then
// read the changed rows from the API.
//
// It must never import jobs or migrations; it reads the event log only to
// push live updates to open pages.
package ui

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/projections"
)

//go:embed static
var static embed.FS

// Projection is how far the read models are; live updates wait for it, so
// that a page that reads a run after being told it changed sees the change.
type Projection interface {
	// WaitForCheckpoint waits until the read models are applied up to cp.
	WaitForCheckpoint(ctx context.Context, cp eventstore.Checkpoint) error
}

// Options configure the UI.
type Options struct {
	// Store is the event log, tailed to push live updates to open pages.
	// Nil: /ui/live answers 503 and pages fall back to polling.
	Store *eventstore.Store
	// Projection is waited on before a live update is pushed. Defaults to
	// one that follows the read models' stored checkpoint (every 50ms while
	// a page waits).
	Projection Projection
	// ProjectionWait bounds that wait. Defaults to 5s; after it the update
	// is pushed anyway.
	ProjectionWait time.Duration
	// Heartbeat is how often an idle live stream sends a comment, so that
	// proxies keep it open. Defaults to 15s.
	Heartbeat time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.Projection == nil && o.Store != nil {
		// A projector that is never run: its WaitForCheckpoint follows the
		// checkpoint that the running projector (of any server) stores.
		if p, err := projections.NewProjector(o.Store, projections.ProjectorOptions{}); err == nil {
			o.Projection = p
		}
	}
	if o.ProjectionWait <= 0 {
		o.ProjectionWait = 5 * time.Second
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// page is one page of the UI: the shell with the module that renders it.
type page struct {
	Name  string // module under assets/js/pages/, and the nav entry it highlights
	Title string
}

// Handler serves the UI's pages, assets and live updates.
func Handler(opts Options) http.Handler {
	opts.defaults()
	assets, err := newAssetServer()
	if err != nil {
		panic(err) // the embedded files are part of the binary: a test catches this
	}
	shell := template.Must(template.ParseFS(static, "static/shell.html"))
	render := func(p page, status int) http.HandlerFunc {
		var buf bytes.Buffer
		if err := shell.Execute(&buf, struct {
			page
			Version string
		}{p, assets.version}); err != nil {
			panic(err)
		}
		body := buf.Bytes()
		return func(w http.ResponseWriter, r *http.Request) {
			securityHeaders(w.Header())
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(status)
			if r.Method != http.MethodHead {
				_, _ = w.Write(body)
			}
		}
	}

	mux := http.NewServeMux()
	mux.Handle("GET /{$}", render(page{"dashboard", "Dashboard"}, http.StatusOK))
	mux.Handle("GET /runs", render(page{"runs", "Flow runs"}, http.StatusOK))
	mux.Handle("GET /runs/{id}", render(page{"run", "Flow run"}, http.StatusOK))
	mux.Handle("GET /run.html", render(page{"run", "Flow run"}, http.StatusOK)) // ?id=
	mux.Handle("GET /deployments", render(page{"deployments", "Deployments"}, http.StatusOK))
	mux.Handle("GET /deployments/{id}", render(page{"deployment", "Deployment"}, http.StatusOK))
	mux.Handle("GET /work-queues", render(page{"queues", "Work queues"}, http.StatusOK))
	mux.Handle("GET /automations", render(page{"automations", "Automations"}, http.StatusOK))
	mux.Handle("GET /assets/", assets)
	mux.Handle("GET /ui/live", &live{opts: opts})
	notFound := render(page{"notfound", "Not found"}, http.StatusNotFound)
	mux.Handle("/", notFound)
	return mux
}

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
}

// assetServer serves static/assets with an ETag per file, so that browsers
// revalidate cheaply and never run a stale script after an upgrade.
type assetServer struct {
	files   http.Handler
	etags   map[string]string
	version string // one hash of every asset, for cache-busting URLs
}

func newAssetServer() (*assetServer, error) {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, err
	}
	a := &assetServer{files: http.FileServer(http.FS(sub)), etags: map[string]string{}}
	all := sha256.New()
	err = fs.WalkDir(sub, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		a.etags["/"+p] = `"` + hex.EncodeToString(sum[:8]) + `"`
		all.Write(sum[:])
		return nil
	})
	a.version = hex.EncodeToString(all.Sum(nil)[:6])
	return a, err
}

func (a *assetServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := path.Clean(r.URL.Path)
	etag, ok := a.etags[p]
	if !ok || strings.HasSuffix(r.URL.Path, "/") {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	securityHeaders(h)
	h.Set("ETag", etag)
	h.Set("Cache-Control", "no-cache")
	if strings.HasSuffix(p, ".js") {
		h.Set("Content-Type", "text/javascript; charset=utf-8")
	}
	a.files.ServeHTTP(w, r) // answers If-None-Match with 304
}
