package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/riverqueue/river"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/projections"
)

// DeploymentCommands is the write side of deployments the API needs.
type DeploymentCommands interface {
	DeploymentSave(ctx context.Context, spec domain.DeploymentSpec, actor string) (domain.Deployment, bool, error)
	DeploymentPause(ctx context.Context, id uuid.UUID, actor string) (domain.Deployment, error)
	DeploymentResume(ctx context.Context, id uuid.UUID, actor string) (domain.Deployment, error)
	DeploymentDelete(ctx context.Context, id uuid.UUID, actor string) (domain.Deployment, error)
}

// RunCreateRequest is the body of POST /deployments/{id}/runs.
type RunCreateRequest struct {
	ScheduledAt    *time.Time     `json:"scheduled_at"`    // nil: now
	Parameters     map[string]any `json:"parameters"`      // overrides of the deployment's defaults
	IdempotencyKey string         `json:"idempotency_key"` // a second request with the same key creates nothing
	Name           string         `json:"name"`            // the run's name; default: the flow's name and a random suffix
}

// RunCommands is the write side of flow runs the API needs.
type RunCommands interface {
	RunCreate(ctx context.Context, deploymentID uuid.UUID, req RunCreateRequest, actor string) (uuid.UUID, error)
	RunCancel(ctx context.Context, id uuid.UUID, actor string) error
	RunRetry(ctx context.Context, id uuid.UUID, actor string) error
}

// ReadModel is the read side the API needs.
type ReadModel interface {
	DeploymentList(ctx context.Context, f projections.DeploymentFilter) (projections.Page[projections.Deployment], error)
	DeploymentGet(ctx context.Context, id uuid.UUID) (projections.Deployment, error)
	// AppendRunListJSON appends the page of runs f selects as the JSON
	// document of GET /runs.
	AppendRunListJSON(ctx context.Context, b []byte, f projections.RunFilter) ([]byte, error)
	RunGet(ctx context.Context, id uuid.UUID) (projections.FlowRun, error)
	// RunIDsByName returns the ids of at most limit runs named name.
	RunIDsByName(ctx context.Context, name string, limit int) ([]uuid.UUID, error)
	// DeploymentIDByName returns the id of the live deployment named name.
	DeploymentIDByName(ctx context.Context, name string) (uuid.UUID, bool, error)
	RunGraph(ctx context.Context, id uuid.UUID) (projections.Graph, error)
	RunEvents(ctx context.Context, id uuid.UUID) ([]projections.Event, error)
	RunHistory(ctx context.Context, id uuid.UUID, at projections.HistoryPoint) (projections.History, error)
	EventList(ctx context.Context, f projections.EventFilter) (projections.Page[projections.Event], error)
	RunOutputs(ctx context.Context, runID uuid.UUID) ([]projections.RunOutput, error)
	TaskRunOutput(ctx context.Context, taskRunID uuid.UUID, name string) (domain.Output, error)
	DeploymentMetrics(ctx context.Context, deploymentID uuid.UUID, limit int) (projections.Page[projections.MetricPoint], error)
}

// Logs is the read side of task logs the API needs.
type Logs interface {
	RunLogs(ctx context.Context, runID uuid.UUID, f projections.LogFilter) (projections.Page[projections.LogLine], error)
	// RunState is the run's current state; following ends when it is
	// terminal.
	RunState(ctx context.Context, runID uuid.UUID) (projections.State, error)
	// LogNotify signals when new lines of the run may be stored, until stop.
	LogNotify(runID uuid.UUID) (ch <-chan struct{}, stop func())
}

// WorkQueues is the read side and the settings of work queues the API needs.
type WorkQueues interface {
	WorkQueueList(ctx context.Context, f projections.WorkQueueFilter) (projections.Page[projections.WorkQueue], error)
	WorkQueueGet(ctx context.Context, name string) (projections.WorkQueue, error)
	WorkQueueSave(ctx context.Context, s projections.WorkQueueSettings) (created bool, err error)
}

// QueueControl pauses and resumes work queues; RiverQueues is River's.
type QueueControl interface {
	QueuePause(ctx context.Context, name string) error
	QueueResume(ctx context.Context, name string) error
}

// streamWaiter is a Projection that can wait for one stream's last write
// rather than for the whole log (read-your-writes without waiting for
// everyone else's events).
type streamWaiter interface {
	WaitForStream(ctx context.Context, streamID uuid.UUID) error
}

// metricsRegisterer is a Projection (or the Automations) with metrics of
// its own.
type metricsRegisterer interface {
	RegisterMetrics(r prometheus.Registerer) error
}

// Projection tells how far the read models are behind the log.
type Projection interface {
	// Sync waits until every event committed before the call is in the
	// read models.
	Sync(ctx context.Context) error
	// Lag counts the events not yet in the read models.
	Lag(ctx context.Context) (int64, error)
}

// Options configure the API.
type Options struct {
	// Deployments runs deployment commands. Required.
	Deployments DeploymentCommands
	// Runs runs flow run commands. Nil: those endpoints answer 501.
	Runs RunCommands
	// Reads answers queries. Required.
	Reads ReadModel
	// Projection is waited on after each write, so that the next read sees
	// it, and checked by /readyz. Required.
	Projection Projection
	// Logs serves GET /runs/{id}/logs. Defaults to Reads when it
	// implements Logs; nil otherwise, and the endpoint answers 501.
	Logs Logs
	// WorkQueues serves the work queue endpoints. Defaults to Reads when it
	// implements WorkQueues; nil otherwise (501).
	WorkQueues WorkQueues
	// Queues pauses and resumes work queues. Defaults to RiverQueues(River)
	// when River is set; nil otherwise (501).
	Queues QueueControl
	// River, when set, serves River's UI under /riverui/ (job-level
	// inspection) and pauses and resumes queues.
	River *river.Client[pgx.Tx]
	// Context bounds the API's background work (River UI's services).
	// Defaults to context.Background().
	Context context.Context
	// LogPollInterval bounds how long a follower of a run's logs waits for
	// new lines when no notification comes. Defaults to 1s.
	LogPollInterval time.Duration
	// Blobs holds the bytes of task outputs, served by GET
	// /task-runs/{id}/outputs/{name}. Nil: that endpoint answers 501.
	Blobs blobstore.Store
	// Pool is the database, for /readyz and idempotency keys. Required.
	Pool *pgxpool.Pool
	// Registry serves /metrics and receives the API's metrics. Defaults to
	// a new registry with the Go and process collectors.
	Registry *prometheus.Registry
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// BodyLimit is the largest request body, in bytes. Defaults to 1 MiB.
	BodyLimit int64
	// SyncTimeout bounds the wait for the read models after a write.
	// Defaults to 5s; after it the write's response is built from the
	// write side.
	SyncTimeout time.Duration
	// ReadyMaxLag is the most events the read models may be behind for
	// /readyz to say ready. Defaults to 1000.
	ReadyMaxLag int64
	// Auth, when set, requires an API token on every request but the
	// health probes as soon as one active token exists (see Auth). Nil: no
	// request is checked.
	Auth *Auth
	// Automations serves the automation endpoints. Nil: they answer 501.
	Automations Automations
	// Actor names who makes a request, for the events' metadata. Defaults
	// to the request's token as "token:NAME" (see Auth), else "api".
	Actor func(r *http.Request) string
}

func (o *Options) validate() error {
	switch {
	case o.Deployments == nil:
		return errors.New("api options: Deployments is required")
	case o.Reads == nil:
		return errors.New("api options: Reads is required")
	case o.Projection == nil:
		return errors.New("api options: Projection is required")
	case o.Pool == nil:
		return errors.New("api options: Pool is required")
	case o.BodyLimit < 0:
		return fmt.Errorf("api options: BodyLimit must not be negative, got %d", o.BodyLimit)
	case o.SyncTimeout < 0:
		return fmt.Errorf("api options: SyncTimeout must not be negative, got %s", o.SyncTimeout)
	case o.ReadyMaxLag < 0:
		return fmt.Errorf("api options: ReadyMaxLag must not be negative, got %d", o.ReadyMaxLag)
	case o.LogPollInterval < 0:
		return fmt.Errorf("api options: LogPollInterval must not be negative, got %s", o.LogPollInterval)
	}
	if o.Logs == nil {
		o.Logs, _ = o.Reads.(Logs)
	}
	if o.WorkQueues == nil {
		o.WorkQueues, _ = o.Reads.(WorkQueues)
	}
	if o.Queues == nil && o.River != nil {
		o.Queues = RiverQueues(o.River)
	}
	if o.Context == nil {
		o.Context = context.Background()
	}
	if o.LogPollInterval == 0 {
		o.LogPollInterval = time.Second
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
		o.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.BodyLimit == 0 {
		o.BodyLimit = 1 << 20
	}
	if o.SyncTimeout == 0 {
		o.SyncTimeout = 5 * time.Second
	}
	if o.ReadyMaxLag == 0 {
		o.ReadyMaxLag = 1000
	}
	if o.Actor == nil {
		o.Actor = actorOf
	}
	return nil
}

type server struct {
	opts    Options
	log     *slog.Logger
	idem    *idempotencyKeys
	metrics *httpMetrics
}

// New returns the API as an http.Handler.
func New(opts Options) (http.Handler, error) {
	e, err := newEcho(opts)
	if err != nil {
		return nil, err
	}
	return e, nil
}

func newEcho(opts Options) (*echo.Echo, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	s := &server{opts: opts, log: opts.Logger, idem: &idempotencyKeys{pool: opts.Pool}}
	m, err := newHTTPMetrics(opts.Registry)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	for _, c := range []any{opts.Projection, opts.Automations} {
		if p, ok := c.(metricsRegisterer); ok {
			if err := p.RegisterMetrics(opts.Registry); err != nil {
				return nil, err
			}
		}
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	// Root middleware only: Echo v4 gives a group with middleware catch-all
	// routes, which would turn every 405 under it into a 404.
	// Auth comes before idempotency, which answers repeated requests from
	// its store.
	e.Use(s.measure, s.recoverPanics, s.authenticate, s.idempotency)

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", echo.WrapHandler(m.handler(opts.Registry)))

	g := e.Group("/api/v1")
	g.GET("/openapi.json", s.openAPI)
	g.POST("/deployments", s.deploymentSave)
	g.GET("/deployments", s.deploymentList)
	g.GET("/deployments/:id", s.deploymentGet)
	g.DELETE("/deployments/:id", s.deploymentDelete)
	g.POST("/deployments/:id/pause", s.deploymentPause)
	g.POST("/deployments/:id/resume", s.deploymentResume)
	g.POST("/deployments/:id/runs", s.runCreate)
	g.GET("/runs", s.runList)
	g.GET("/runs/:id", s.runGet)
	g.GET("/runs/:id/graph", s.runGraph)
	g.GET("/runs/:id/events", s.runEvents)
	g.GET("/runs/:id/history", s.runHistory)
	g.POST("/runs/:id/cancel", s.runCancel)
	g.POST("/runs/:id/retry", s.runRetry)
	g.GET("/runs/:id/logs", s.runLogs)
	g.GET("/runs/:id/outputs", s.runOutputs)
	g.GET("/task-runs/:id/outputs/*", s.taskRunOutput)
	g.HEAD("/task-runs/:id/outputs/*", s.taskRunOutput)
	g.GET("/deployments/:id/metrics", s.deploymentMetrics)
	g.GET("/events", s.eventList)
	g.GET("/work-queues", s.workQueueList)
	g.POST("/work-queues", s.workQueueSave)
	g.POST("/work-queues/:name/pause", s.workQueuePause)
	g.POST("/work-queues/:name/resume", s.workQueueResume)
	s.routeAutomations(g)
	if opts.River != nil {
		if err := mountRiverUI(opts.Context, e, opts.River, opts.Logger); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// recoverPanics turns a panic in a handler into an internal error.
func (s *server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		return next(c)
	}
}

// readBody reads the request body, at most BodyLimit bytes.
func (s *server) readBody(c echo.Context) ([]byte, error) {
	r := c.Request()
	if r.ContentLength > s.opts.BodyLimit {
		return nil, s.tooLarge()
	}
	b, err := io.ReadAll(http.MaxBytesReader(c.Response(), r.Body, s.opts.BodyLimit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, s.tooLarge()
	}
	if err != nil {
		return nil, domain.Errorf(domain.CodeInvalid, "read body: %v", err)
	}
	r.Body = io.NopCloser(bytes.NewReader(b)) // readable again by the next reader
	return b, nil
}

func (s *server) tooLarge() error {
	return domain.Errorf(domain.CodeTooLarge, "the body is larger than %d bytes", s.opts.BodyLimit)
}

// decodeStrict decodes a JSON object body into v, refusing unknown fields,
// values of the wrong type and data after the object. An empty body leaves
// v as it is.
func decodeStrict(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return domain.Errorf(domain.CodeInvalid, "invalid JSON at byte %d: %v", syn.Offset, err)
		case errors.As(err, &typ):
			field := typ.Field
			if field == "" {
				return domain.Errorf(domain.CodeInvalid, "invalid body: must be a JSON object")
			}
			return domain.Invalid(field, "must be %s", jsonKind(typ.Type.Kind().String()))
		case errors.Is(err, io.ErrUnexpectedEOF):
			return domain.Errorf(domain.CodeInvalid, "invalid JSON: unexpected end of input")
		}
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return domain.Invalid(strings.Trim(name, `"`), "unknown field")
		}
		var te *time.ParseError
		if errors.As(err, &te) {
			return domain.Errorf(domain.CodeInvalid, "invalid time %q: use RFC 3339 such as 2026-01-02T15:04:05Z", te.Value)
		}
		return domain.Errorf(domain.CodeInvalid, "invalid body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return domain.Errorf(domain.CodeInvalid, "invalid JSON: data after the object")
	}
	return nil
}

// checkNUL refuses a decoded body that holds a NUL character in any
// string or key: JSON allows \u0000, PostgreSQL's jsonb and text do not, so
// it would fail only when stored. The error names the first such field.
func checkNUL(v any) error {
	b, err := json.Marshal(v)
	if err != nil || !bytes.Contains(b, []byte(`\u0000`)) {
		return nil
	}
	var doc any
	if json.Unmarshal(b, &doc) != nil {
		return domain.Errorf(domain.CodeInvalid, "text must not contain NUL characters")
	}
	field := nulField(doc, "")
	if field == "" {
		field = "body"
	}
	return domain.Invalid(field, "must not contain NUL characters (\\u0000)")
}

// nulField returns the path of the first string or key holding a NUL.
func nulField(v any, path string) string {
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	switch v := v.(type) {
	case string:
		if strings.ContainsRune(v, 0) {
			return path
		}
	case []any:
		for i, x := range v {
			if f := nulField(x, fmt.Sprintf("%s[%d]", path, i)); f != "" {
				return f
			}
		}
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			if strings.ContainsRune(k, 0) {
				return join(strings.ReplaceAll(k, "\x00", `\u0000`))
			}
			if f := nulField(v[k], join(k)); f != "" {
				return f
			}
		}
	}
	return ""
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "map", "struct":
		return "an object"
	case "slice", "array":
		return "a list"
	case "bool":
		return "true or false"
	}
	return "a number"
}

// query reads a request's query string, refusing parameters the endpoint
// does not know (a typo would otherwise silently return everything).
type query struct {
	c   echo.Context
	err error
}

func (s *server) query(c echo.Context, known ...string) *query {
	q := &query{c: c}
	for name, values := range c.QueryParams() {
		if !slices.Contains(known, name) {
			q.err = domain.Invalid(name, "unknown query parameter; known: %s", strings.Join(known, ", "))
			break
		}
		for _, v := range values {
			// PostgreSQL text holds neither: refused here rather than
			// failing in a query
			if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
				q.err = domain.Invalid(name, "must be UTF-8 text without NUL characters")
				return q
			}
		}
	}
	return q
}

func (q *query) str(name string) string { return q.c.QueryParam(name) }

// list reads a parameter given repeatedly or comma-separated.
func (q *query) list(name string) []string {
	var out []string
	for _, v := range q.c.QueryParams()[name] {
		for part := range strings.SplitSeq(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}

func (q *query) int(name string) int {
	v := q.c.QueryParam(name)
	if v == "" || q.err != nil {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		q.err = domain.Invalid(name, "must be an integer, got %q", v)
	}
	return n
}

func (q *query) int64(name string) int64 {
	v := q.c.QueryParam(name)
	if v == "" || q.err != nil {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		q.err = domain.Invalid(name, "must be an integer, got %q", v)
	}
	return n
}

func (q *query) bool(name string) bool {
	v := q.c.QueryParam(name)
	if v == "" || q.err != nil {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		q.err = domain.Invalid(name, "must be true or false, got %q", v)
	}
	return b
}

func (q *query) time(name string) *time.Time {
	v := q.c.QueryParam(name)
	if v == "" || q.err != nil {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		q.err = domain.Invalid(name, "must be an RFC 3339 time such as 2026-01-02T15:04:05Z, got %q", v)
		return nil
	}
	return &t
}

// noBody refuses a body on endpoints that take none, other than {}.
func (s *server) noBody(c echo.Context) error {
	b, err := s.readBody(c)
	if err != nil {
		return err
	}
	var empty struct{}
	return decodeStrict(b, &empty)
}

// sync waits, a bounded time, for the read models to hold what was just
// written; false when they did not get there in time.
func (s *server) sync(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, s.opts.SyncTimeout)
	defer cancel()
	if err := s.opts.Projection.Sync(ctx); err != nil {
		s.log.Warn("read models did not catch up after a write", "err", err)
		return false
	}
	return true
}

// syncStream waits, a bounded time, until the read models hold the last
// write to a stream (the one just made); false when they did not get there
// in time. Without a Projection that can wait for one stream, it waits for
// the whole log.
func (s *server) syncStream(ctx context.Context, streamID uuid.UUID) bool {
	w, ok := s.opts.Projection.(streamWaiter)
	if !ok {
		return s.sync(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.SyncTimeout)
	defer cancel()
	if err := w.WaitForStream(ctx, streamID); err != nil {
		s.log.Warn("read models did not catch up after a write", "stream", streamID, "err", err)
		return false
	}
	return true
}

func (s *server) actor(c echo.Context) string { return s.opts.Actor(c.Request()) }
