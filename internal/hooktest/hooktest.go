// Package hooktest is a webhook receiver on loopback for tests: it keeps
// the idempotency key of every request and answers 500 while it is down.
package hooktest

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// headerIdempotencyKey is automations.HeaderIdempotencyKey (not imported:
// this package serves that package's tests too).
const headerIdempotencyKey = "Ordo-Idempotency-Key"

// Receiver is a webhook receiver; it stops when the test ends.
type Receiver struct {
	URL  string
	Down atomic.Bool // answer 500 to every request

	mu   sync.Mutex
	keys []string
}

// New starts a receiver, down when down is true.
func New(t testing.TB, down bool) *Receiver {
	r := &Receiver{}
	r.Down.Store(down)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.keys = append(r.keys, req.Header.Get(headerIdempotencyKey))
		r.mu.Unlock()
		if r.Down.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
		}
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// Keys are the idempotency keys of the requests so far, in order.
func (r *Receiver) Keys() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.keys...)
}
