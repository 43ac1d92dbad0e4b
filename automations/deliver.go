package automations

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/notify"
)

// KindDelivery is the River job kind that delivers one action of a firing.
const KindDelivery = "ordo.automation_delivery"

// QueueAutomations is the River queue of delivery jobs, worked by servers.
const QueueAutomations = "ordo_automations"

// Headers of a webhook request.
const (
	HeaderIdempotencyKey = "Ordo-Idempotency-Key"
	HeaderSignature      = "Ordo-Signature"
)

// DeliveryArgs are a delivery job's arguments: everything it sends, fixed
// when the automation fired, so that every attempt sends the same body and
// a later change of the automation does not alter a firing under way. The
// secret is not here: only the name of the variable that holds it.
type DeliveryArgs struct {
	FiringID  uuid.UUID `json:"firing_id"`
	Action    int       `json:"action"`
	URL       string    `json:"url"`
	SecretEnv string    `json:"secret_env"`
	Body      string    `json:"body"` // a string, so that jsonb keeps its bytes as signed
	// Spec is the action as it was when fired; nil for a webhook.
	Spec    *domain.AutomationAction `json:"spec,omitempty"`
	Trigger string                   `json:"trigger,omitempty"` // the automation's trigger type
}

// Kind is the River job kind.
func (DeliveryArgs) Kind() string { return KindDelivery }

// DeliveryOptions tune delivery.
type DeliveryOptions struct {
	// MaxAttempts bounds the attempts of one delivery; after the last
	// failed one it is dead. Defaults to 8.
	MaxAttempts int
	// Backoff is the wait after the first failed attempt, doubled after
	// each further one and capped at an hour. Defaults to 5s.
	Backoff time.Duration
	// Timeout bounds one attempt: connecting, sending and reading the
	// answer. Defaults to 10s.
	Timeout time.Duration
	// MaxAnswer is how much of an answer's body is read. Defaults to 64 KiB.
	MaxAnswer int64
	// AllowPrivate lets targets resolve to loopback, private and link-local
	// addresses (ORDO_WEBHOOK_ALLOW_PRIVATE=true; ordo dev sets it).
	AllowPrivate bool
	// Workers is how many deliveries one server runs at once. Defaults to 20.
	Workers int
	// Getenv reads the signing secrets and the ORDO_SMTP_* settings.
	// Defaults to os.Getenv.
	Getenv func(string) string
	// SMTP, when set, is used instead of the ORDO_SMTP_* settings.
	SMTP *notify.SMTPConfig
	// PublicURL is where the UI is served, for the links to runs in
	// messages (ORDO_PUBLIC_URL). None when empty.
	PublicURL string
	// Ordo does the Ordo actions; without it they end dead.
	Ordo OrdoActions
	// Store reads the triggering runs. Defaults to one on the pool.
	Store *eventstore.Store
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (o *DeliveryOptions) setDefaults() {
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 8
	}
	if o.Backoff <= 0 {
		o.Backoff = 5 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MaxAnswer <= 0 {
		o.MaxAnswer = 64 << 10
	}
	if o.Workers <= 0 {
		o.Workers = 20
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// RescueAfter is how long a delivery job stays running before another
// server takes it up (RunRescuer): a server killed mid-delivery leaves its
// job running, so it waits until an attempt surely ended.
func (o DeliveryOptions) RescueAfter() time.Duration {
	o.setDefaults()
	return 2*o.Timeout + time.Minute
}

// NewRiverClient returns a River client that works delivery jobs on
// QueueAutomations (once started) and inserts them (the Consumer and
// Service insert with it).
func NewRiverClient(pool *pgxpool.Pool, opts DeliveryOptions) (*river.Client[pgx.Tx], error) {
	opts.setDefaults()
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, newDeliveryWorker(pool, opts)); err != nil {
		return nil, err
	}
	return river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:        map[string]river.QueueConfig{QueueAutomations: {MaxWorkers: opts.Workers}},
		Workers:       workers,
		MaxAttempts:   opts.MaxAttempts,
		FetchCooldown: 10 * time.Millisecond,
		// Not RescueAfter: see riverRescueAfter.
		RescueStuckJobsAfter: riverRescueAfter,
		Logger:               opts.Logger,
	})
}

// deliveryWorker delivers one action of a firing.
type deliveryWorker struct {
	river.WorkerDefaults[DeliveryArgs]
	pool   *pgxpool.Pool
	store  *eventstore.Store
	opts   DeliveryOptions
	client *http.Client // refuses private addresses unless allowed
}

func newDeliveryWorker(pool *pgxpool.Pool, opts DeliveryOptions) *deliveryWorker {
	dialer := &net.Dialer{Timeout: opts.Timeout}
	if !opts.AllowPrivate {
		dialer.Control = refusePrivate
	}
	transport := &http.Transport{
		Proxy:                 nil, // a proxy would dial for us, past the address check
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   opts.Timeout,
		ResponseHeaderTimeout: opts.Timeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
	}
	store := opts.Store
	if store == nil {
		store = eventstore.New(pool, domain.NewRegistry())
	}
	return &deliveryWorker{pool: pool, store: store, opts: opts, client: &http.Client{
		Transport:     transport,
		Timeout:       opts.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// errRefusedTarget marks a target refused for its address: no retry helps.
var errRefusedTarget = errors.New("refused target")

// refusePrivate is the dialer's check of the address a name resolved to,
// made on every connection, so that a name that resolves differently at
// delivery than when the automation was saved is caught too.
func refusePrivate(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot read address %q", errRefusedTarget, address)
	}
	if a := ap.Addr().Unmap(); PrivateAddr(a) {
		return fmt.Errorf("%w: %s is a loopback, private or link-local address (set ORDO_WEBHOOK_ALLOW_PRIVATE=true to allow)", errRefusedTarget, a)
	}
	return nil
}

// PrivateAddr reports whether a is an address webhooks are not sent to
// unless allowed: loopback, private, link-local, unspecified or multicast.
func PrivateAddr(a netip.Addr) bool {
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsUnspecified() || a.IsMulticast() || a.IsInterfaceLocalMulticast()
}

// NextRetry waits Backoff, doubled after each failed attempt, capped at an hour.
func (w *deliveryWorker) NextRetry(job *river.Job[DeliveryArgs]) time.Time {
	d := w.opts.Backoff
	for i := 1; i < job.Attempt && d < time.Hour; i++ {
		d *= 2
	}
	return time.Now().Add(min(d, time.Hour))
}

// Timeout leaves room past the request's own timeout to record the attempt.
func (w *deliveryWorker) Timeout(*river.Job[DeliveryArgs]) time.Duration {
	return w.opts.Timeout + 30*time.Second
}

// Sign returns the Ordo-Signature header of body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">".
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// attemptResult is what one attempt got; permanent when no retry helps.
type attemptResult struct {
	code      *int
	latency   time.Duration
	err       error
	permanent bool
}

func (w *deliveryWorker) Work(ctx context.Context, job *river.Job[DeliveryArgs]) error {
	a := job.Args
	var res attemptResult
	if a.Spec == nil || a.Spec.Type == domain.ActionWebhook {
		res = w.post(ctx, a)
	} else {
		res = w.act(ctx, a)
	}
	refused := res.permanent || errors.Is(res.err, errRefusedTarget)
	status := "pending"
	switch {
	case res.err == nil:
		status = "delivered"
	case refused || job.Attempt >= job.MaxAttempts:
		status = "dead"
	}
	var errText *string
	if res.err != nil {
		s := res.err.Error()
		errText = &s
	}
	record := func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
INSERT INTO automation_delivery_attempts (firing_id, action, attempt, status_code, latency_ms, error)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
			a.FiringID, a.Action, job.Attempt, res.code, float64(res.latency.Microseconds())/1000, errText); err != nil {
			return fmt.Errorf("record delivery attempt: %w", err)
		}
		if _, err := tx.Exec(ctx, `
UPDATE automation_deliveries SET status = $3, attempts = $4, last_status_code = $5, last_error = $6, updated_at = now()
WHERE firing_id = $1 AND action = $2`, a.FiringID, a.Action, status, job.Attempt, res.code, errText); err != nil {
			return fmt.Errorf("record delivery status: %w", err)
		}
		if status == "delivered" {
			_, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job)
			return err
		}
		return nil
	}
	if err := pgx.BeginFunc(ctx, w.pool, record); err != nil {
		return err // delivered or not, River tries again: at least once
	}
	switch {
	case status == "delivered":
		return nil
	case refused:
		return river.JobCancel(res.err)
	}
	w.opts.Logger.Warn("automation delivery failed", "firing", a.FiringID, "action", a.Action, "attempt", job.Attempt, "of", job.MaxAttempts, "err", res.err)
	return res.err
}

// post sends one attempt.
func (w *deliveryWorker) post(ctx context.Context, a DeliveryArgs) attemptResult {
	secret := w.opts.Getenv(a.SecretEnv)
	if secret == "" {
		return attemptResult{err: fmt.Errorf("the server has no secret in environment variable %s", a.SecretEnv)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.URL, strings.NewReader(a.Body))
	if err != nil {
		return attemptResult{err: fmt.Errorf("%w: %v", errRefusedTarget, err)}
	}
	req.Header.Set("Content-Type", "application/cloudevents+json; charset=utf-8")
	req.Header.Set("User-Agent", "ordo-automations")
	req.Header.Set(HeaderIdempotencyKey, a.FiringID.String())
	req.Header.Set(HeaderSignature, Sign([]byte(secret), time.Now(), []byte(a.Body)))
	start := time.Now()
	resp, err := w.client.Do(req)
	if err != nil {
		return attemptResult{latency: time.Since(start), err: err}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, w.opts.MaxAnswer))
	_ = resp.Body.Close()
	res := attemptResult{code: &resp.StatusCode, latency: time.Since(start)}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		res.err = fmt.Errorf("the receiver answered %s", resp.Status)
	}
	return res
}
