// Package ui is Ordo's web UI: static pages and small scripts, embedded in
// the binary, that read and act through the JSON API under /api/v1. Nothing
// is fetched from the internet.
//
// It must never import jobs or migrations; it reads the event log only to
// push live updates to open pages.
package ui

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/ordoflow/ordo/eventstore"
)

//go:embed static
var static embed.FS

// Options configure the UI.
type Options struct {
	// Store is the event log, tailed to push live updates to open pages.
	Store *eventstore.Store
}

// Handler serves the UI's pages and assets.
func Handler(opts Options) http.Handler {
	sub, _ := fs.Sub(static, "static")
	return http.FileServer(http.FS(sub))
}
