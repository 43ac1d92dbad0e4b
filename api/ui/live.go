package ui

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// liveMessage tells a page that a stream changed. Pages read what changed
// from the API; the message only says where to look.
type liveMessage struct {
	StreamID   uuid.UUID `json:"stream_id"`
	StreamType string    `json:"stream_type"`
	Type       string    `json:"type"`
	FlowRunID  string    `json:"flow_run_id,omitempty"` // a flow run's own id, or a task run's flow run
	Position   int64     `json:"position"`
}

// maxLiveBatch is the most messages pushed for one batch of events; a
// larger burst is pushed as one "reset" message that tells pages to reload
// what they show.
const maxLiveBatch = 200

// live serves GET /ui/live: a Server-Sent Events stream with one message
// per changed stream, each pushed once the read models hold the change.
//
// ?after=TXID-POSITION (or the Last-Event-ID header on a reconnect) starts
// after that checkpoint; without it, at the end of the log. The first event
// is "ready", with the checkpoint the stream starts after.
type live struct {
	opts Options

	owners owners

	mu        sync.Mutex
	shutdowns map[*http.Server]chan struct{}
}

func (l *live) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	if l.opts.Store == nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "live updates are not available on this server")
		return
	}
	after, fresh, err := l.start(r)
	if err != nil {
		if domain.ErrorCode(err) == domain.CodeInvalid {
			writeError(w, http.StatusBadRequest, "invalid", err.Error())
		} else {
			l.opts.Logger.Error("live updates: find the end of the log", "err", err)
			writeError(w, http.StatusInternalServerError, "internal", "internal error")
		}
		return
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	// http.Server.Shutdown waits for handlers but does not cancel their
	// requests: end the stream when the server shuts down.
	if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok {
		done := l.shutdownSignal(srv)
		go func() {
			select {
			case <-done:
				cancel()
			case <-ctx.Done():
			}
		}()
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	out := &sseWriter{w: w, rc: http.NewResponseController(w)}
	// The heartbeats and the resets are sent from goroutines of their own.
	// Once this handler returns, net/http finishes the response and may
	// reuse the connection: so before it returns, no send may be under way
	// or still to come (out.close), and the goroutines have ended.
	var senders sync.WaitGroup
	defer func() {
		out.close()
		cancel()
		senders.Wait()
	}()
	ready, _ := json.Marshal(map[string]string{"checkpoint": after.String()})
	if err := out.send("retry: 2000\nid: " + after.String() + "\nevent: ready\ndata: " + string(ready) + "\n\n"); err != nil {
		return
	}

	senders.Go(func() {
		tick := time.NewTicker(l.opts.Heartbeat)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if err := out.send(": keep-alive\n\n"); err != nil {
					cancel()
					return
				}
			}
		}
	})

	lagged := make(chan eventstore.Checkpoint, 1)
	senders.Go(func() { l.resetWhenCaughtUp(ctx, out, lagged) })
	// A page reads what it shows again on "ready". A stream that starts at
	// the end of the log (no checkpoint to resume after: a first tab, or
	// one that took the stream over before it heard of any event) will not
	// send the events before it, and with the read models behind them that
	// read lacks them too: a "reset" follows once they have caught up.
	if fresh {
		now, stop := context.WithCancel(ctx)
		stop()
		if l.opts.Projection.WaitForCheckpoint(now, after) != nil {
			lagged <- after
		}
	}
	err = l.opts.Store.Subscribe(ctx, after, eventstore.SubscribeOptions{BatchSize: 1000}, func(ctx context.Context, envs []domain.Envelope) error {
		return l.push(ctx, out, envs, lagged)
	})
	if err != nil && ctx.Err() == nil {
		l.opts.Logger.Warn("live updates stopped", "err", err)
	}
}

// start is where the stream begins: the checkpoint the client asks for, or
// (fresh) the end of the stable prefix of the log.
func (l *live) start(r *http.Request) (after eventstore.Checkpoint, fresh bool, err error) {
	s := r.URL.Query().Get("after")
	if s == "" {
		s = r.Header.Get("Last-Event-ID")
	}
	if s != "" {
		cp, err := eventstore.ParseCheckpoint(s)
		if err != nil {
			return cp, false, domain.Invalid("after", "must be a checkpoint such as 812-4051, got %q", s)
		}
		return cp, false, nil
	}
	after, _, err = l.opts.Store.StableHead(r.Context(), l.opts.Store.Pool())
	return after, true, err
}

// push sends one batch of events as messages, one per changed stream, once
// the read models hold them, or after ProjectionWait: then it hands the
// batch's checkpoint to lagged, and a "reset" follows once the read models
// caught up, so that a page that read them too early reads them again.
func (l *live) push(ctx context.Context, out *sseWriter, envs []domain.Envelope, lagged chan eventstore.Checkpoint) error {
	last := eventstore.CheckpointOf(envs[len(envs)-1])
	msgs := make([]liveMessage, 0, len(envs))
	index := map[uuid.UUID]int{}
	for _, env := range envs {
		m := liveMessage{StreamID: env.StreamID, StreamType: env.StreamType, Type: env.Type, Position: env.Position}
		switch e := env.Event.(type) {
		case domain.TaskRunCreated:
			l.owners.learn(env.StreamID, e.FlowRunID)
		}
		if env.StreamType == domain.StreamFlowRun {
			m.FlowRunID = env.StreamID.String()
		}
		if i, ok := index[env.StreamID]; ok {
			msgs[i] = m // the stream's latest change is enough
			continue
		}
		index[env.StreamID] = len(msgs)
		msgs = append(msgs, m)
	}

	wait, cancel := context.WithTimeout(ctx, l.opts.ProjectionWait)
	err := l.opts.Projection.WaitForCheckpoint(wait, last)
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		l.opts.Logger.Debug("live updates: read models behind; pushing anyway", "err", err)
		defer func() { // once the messages are sent; only the latest checkpoint is waited for
			select {
			case <-lagged:
			default:
			}
			lagged <- last
		}()
	}

	id := "id: " + last.String() + "\n"
	if len(msgs) > maxLiveBatch {
		return out.send(id + "data: {\"type\":\"reset\"}\n\n")
	}
	if err := l.owners.resolve(ctx, l.opts.Store, msgs); err != nil && ctx.Err() == nil {
		l.opts.Logger.Debug("live updates: find the flow runs of task runs", "err", err)
	}
	var buf []byte
	for i, m := range msgs {
		if i == len(msgs)-1 {
			buf = append(buf, id...)
		}
		b, _ := json.Marshal(m)
		buf = append(buf, "data: "...)
		buf = append(buf, b...)
		buf = append(buf, "\n\n"...)
	}
	return out.send(string(buf))
}

// resetWhenCaughtUp sends "reset" each time the read models reach a
// checkpoint that push could not wait for.
func (l *live) resetWhenCaughtUp(ctx context.Context, out *sseWriter, lagged <-chan eventstore.Checkpoint) {
	for {
		select {
		case <-ctx.Done():
			return
		case cp := <-lagged:
			if l.opts.Projection.WaitForCheckpoint(ctx, cp) != nil {
				return // the stream ended
			}
			if err := out.send("data: {\"type\":\"reset\"}\n\n"); err != nil {
				return
			}
		}
	}
}

func (l *live) shutdownSignal(srv *http.Server) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shutdowns == nil {
		l.shutdowns = map[*http.Server]chan struct{}{}
	}
	ch, ok := l.shutdowns[srv]
	if !ok {
		ch = make(chan struct{})
		l.shutdowns[srv] = ch
		srv.RegisterOnShutdown(func() {
			close(ch)
			l.mu.Lock()
			delete(l.shutdowns, srv)
			l.mu.Unlock()
		})
	}
	return ch
}

// owners remembers which flow run each task run belongs to, so that live
// messages about task runs name their flow run.
type owners struct {
	mu sync.Mutex
	m  map[uuid.UUID]uuid.UUID
}

// maxOwners bounds the memory of owners; when full it starts again.
const maxOwners = 100_000

func (o *owners) learn(taskRunID, flowRunID uuid.UUID) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil || len(o.m) >= maxOwners {
		o.m = make(map[uuid.UUID]uuid.UUID)
	}
	o.m[taskRunID] = flowRunID
}

// resolve fills FlowRunID in the messages about task runs.
func (o *owners) resolve(ctx context.Context, store *eventstore.Store, msgs []liveMessage) error {
	var missing []uuid.UUID
	o.mu.Lock()
	for i := range msgs {
		if msgs[i].StreamType != domain.StreamTaskRun {
			continue
		}
		if f, ok := o.m[msgs[i].StreamID]; ok {
			msgs[i].FlowRunID = f.String()
		} else {
			missing = append(missing, msgs[i].StreamID)
		}
	}
	o.mu.Unlock()
	if len(missing) == 0 {
		return nil
	}
	found, err := store.TaskRunFlowRuns(ctx, store.Pool(), missing)
	if err != nil {
		return err
	}
	for id, f := range found {
		o.learn(id, f)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range msgs {
		if msgs[i].StreamType == domain.StreamTaskRun && msgs[i].FlowRunID == "" {
			if f, ok := o.m[msgs[i].StreamID]; ok {
				msgs[i].FlowRunID = f.String()
			}
		}
	}
	return nil
}

// sseWriter writes to one event stream from several goroutines (events,
// heartbeats and resets), flushing after each write, until it is closed.
type sseWriter struct {
	mu     sync.Mutex
	w      http.ResponseWriter
	rc     *http.ResponseController
	closed bool
}

// errStreamClosed is what a send after close returns.
var errStreamClosed = errors.New("the live stream has ended")

func (s *sseWriter) send(text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errStreamClosed
	}
	if _, err := s.w.Write([]byte(text)); err != nil {
		return err
	}
	return s.rc.Flush()
}

// close waits for a send under way to end and refuses every later one: the
// handler's response is then its own again.
func (s *sseWriter) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// writeError answers with the API's error envelope.
func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": code, "message": message, "details": []any{}}})
	_, _ = w.Write(b)
}
