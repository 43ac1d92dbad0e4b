package automations

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// Service runs the automation commands and queries the API needs.
type Service struct {
	store *eventstore.Store
	river *river.Client[pgx.Tx]
	opts  ServiceOptions
	now   func() time.Time
}

// ServiceOptions tune a Service.
type ServiceOptions struct {
	// AllowPrivate accepts webhook URLs whose host is a loopback, private
	// or link-local address, or localhost (as DeliveryOptions').
	AllowPrivate bool
	// RetryAttempts is the attempts a dead delivery gets when retried (as
	// DeliveryOptions.MaxAttempts). Defaults to 8.
	RetryAttempts int
}

// NewService returns the automations service on store; test firings insert
// their delivery jobs with rc (NewRiverClient's).
func NewService(store *eventstore.Store, rc *river.Client[pgx.Tx], opts ServiceOptions) *Service {
	if opts.RetryAttempts <= 0 {
		opts.RetryAttempts = 8
	}
	return &Service{store: store, river: rc, opts: opts, now: time.Now}
}

// checkTargets refuses, when saving, bad templates and the webhook and
// Slack URLs that name a private address outright; names are resolved, and
// checked again, at delivery.
func (s *Service) checkTargets(spec domain.AutomationSpec) error {
	if err := checkActions(spec); err != nil {
		return err
	}
	if s.opts.AllowPrivate {
		return nil
	}
	for i, a := range spec.Actions {
		u, err := url.Parse(a.URL)
		if err != nil || a.URL == "" {
			continue // Validate names it
		}
		host := strings.ToLower(u.Hostname())
		addr, err := netip.ParseAddr(host)
		if host == "localhost" || strings.HasSuffix(host, ".localhost") || err == nil && PrivateAddr(addr.Unmap()) {
			return domain.Invalid("actions["+strconv.Itoa(i)+"].url", "%s is a loopback, private or link-local address: the server refuses it unless ORDO_WEBHOOK_ALLOW_PRIVATE=true", u.Hostname())
		}
	}
	return nil
}

// AutomationCreate saves a new automation; its name must be free.
func (s *Service) AutomationCreate(ctx context.Context, spec domain.AutomationSpec, actor string) (domain.Automation, error) {
	if err := s.checkTargets(spec); err != nil {
		return domain.Automation{}, err
	}
	return s.command(ctx, uuid.New(), domain.SaveAutomation{Spec: spec}, actor, "created", true)
}

// AutomationUpdate replaces an automation's spec.
func (s *Service) AutomationUpdate(ctx context.Context, id uuid.UUID, spec domain.AutomationSpec, actor string) (domain.Automation, error) {
	if err := s.checkTargets(spec); err != nil {
		return domain.Automation{}, err
	}
	return s.command(ctx, id, domain.SaveAutomation{Spec: spec}, actor, "changed", false)
}

// AutomationPause stops it firing.
func (s *Service) AutomationPause(ctx context.Context, id uuid.UUID, actor string) (domain.Automation, error) {
	return s.command(ctx, id, domain.PauseAutomation{}, actor, "paused", false)
}

// AutomationResume starts it firing again, for events after this command.
func (s *Service) AutomationResume(ctx context.Context, id uuid.UUID, actor string) (domain.Automation, error) {
	return s.command(ctx, id, domain.ResumeAutomation{}, actor, "resumed", false)
}

// AutomationDelete removes it; its firings and deliveries stay.
func (s *Service) AutomationDelete(ctx context.Context, id uuid.UUID, actor string) (domain.Automation, error) {
	return s.command(ctx, id, domain.DeleteAutomation{}, actor, "deleted", false)
}

func (s *Service) command(ctx context.Context, id uuid.UUID, cmd domain.AutomationCommand, actor, reason string, create bool) (domain.Automation, error) {
	var a domain.Automation
	err := s.store.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		a, err = s.commandTx(ctx, tx, id, cmd, actor, reason, create)
		return err
	})
	return a, err
}

// commandTx runs cmd on the automation id within tx.
func (s *Service) commandTx(ctx context.Context, tx pgx.Tx, id uuid.UUID, cmd domain.AutomationCommand, actor, reason string, create bool) (domain.Automation, error) {
	cur, err := s.load(ctx, tx, id, !create)
	if err != nil {
		return domain.Automation{}, err
	}
	if create && cur.Stream > 0 {
		return domain.Automation{}, domain.Errorf(domain.CodeConflict, "automation %s exists", id)
	}
	if !create && cur.Stream == 0 {
		return domain.Automation{}, domain.Errorf(domain.CodeNotFound, "automation %s not found", id)
	}
	events, err := domain.DecideAutomation(cur, cmd)
	if err != nil || len(events) == 0 {
		return cur, err
	}
	envs, err := s.store.Append(ctx, tx, eventstore.Append{StreamID: id, ExpectedVersion: cur.Stream, Events: events,
		Metadata: domain.Metadata{Actor: actor, Reason: "automation " + reason}})
	if err != nil {
		return domain.Automation{}, err
	}
	a := cur
	for _, env := range envs {
		a = a.Apply(env.Event, env.RecordedAt)
		a.Stream = env.Version
	}
	spec, err := json.Marshal(a.Spec)
	if err != nil {
		return domain.Automation{}, err
	}
	_, err = tx.Exec(ctx, `
INSERT INTO automations (id, name, spec, paused, deleted, version, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (id) DO UPDATE SET name = $2, spec = $3, paused = $4, deleted = $5, version = $6, updated_at = $8`,
		a.ID, a.Spec.Name, spec, a.Paused, a.Deleted, a.Stream, a.CreatedAt, a.UpdatedAt)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return domain.Automation{}, &domain.Error{Code: domain.CodeConflict, Message: fmt.Sprintf("an automation named %q exists", a.Spec.Name),
			Details: []domain.Detail{{Field: "name", Message: "is taken"}}}
	}
	if err != nil {
		return domain.Automation{}, fmt.Errorf("save automation row: %w", err)
	}
	return a, nil
}

// load folds an automation's stream; lock takes its row first, so that
// commands on one automation wait for each other.
func (s *Service) load(ctx context.Context, tx pgx.Tx, id uuid.UUID, lock bool) (domain.Automation, error) {
	if lock {
		if _, err := tx.Exec(ctx, `SELECT 1 FROM automations WHERE id = $1 FOR UPDATE`, id); err != nil {
			return domain.Automation{}, fmt.Errorf("lock automation: %w", err)
		}
	}
	envs, err := s.store.ReadStream(ctx, tx, id, 0)
	if err != nil {
		return domain.Automation{}, err
	}
	a := domain.Automation{ID: id}
	for _, env := range envs {
		if env.StreamType != domain.StreamAutomation {
			return domain.Automation{}, domain.Errorf(domain.CodeNotFound, "automation %s not found", id)
		}
		a = a.Apply(env.Event, env.RecordedAt)
		a.Stream = env.Version
	}
	return a, nil
}

// AutomationGet returns a live automation.
func (s *Service) AutomationGet(ctx context.Context, id uuid.UUID) (domain.Automation, error) {
	list, err := s.list(ctx, `WHERE id = $1 AND NOT deleted`, id)
	if err != nil {
		return domain.Automation{}, err
	}
	if len(list) == 0 {
		return domain.Automation{}, domain.Errorf(domain.CodeNotFound, "automation %s not found", id)
	}
	return list[0], nil
}

// AutomationList returns every live automation, by name.
func (s *Service) AutomationList(ctx context.Context) ([]domain.Automation, error) {
	return s.list(ctx, `WHERE NOT deleted`)
}

func (s *Service) list(ctx context.Context, where string, args ...any) ([]domain.Automation, error) {
	rows, err := s.store.Pool().Query(ctx, `SELECT id, spec, paused, version, created_at, updated_at FROM automations `+where+` ORDER BY name`, args...)
	if err != nil {
		return nil, fmt.Errorf("list automations: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (domain.Automation, error) {
		var a domain.Automation
		var spec []byte
		if err := r.Scan(&a.ID, &spec, &a.Paused, &a.Stream, &a.CreatedAt, &a.UpdatedAt); err != nil {
			return a, err
		}
		return a, json.Unmarshal(spec, &a.Spec)
	})
}

// AutomationTest fires the automation now with a synthetic event,
// delivered like any other firing, and returns the firing's id.
func (s *Service) AutomationTest(ctx context.Context, id uuid.UUID, actor string) (uuid.UUID, error) {
	a, err := s.AutomationGet(ctx, id)
	if err != nil {
		return uuid.Nil, err
	}
	f := firing{automation: a, at: s.now(), fired: domain.AutomationFired{AutomationID: id, TriggerType: "test", Test: true,
		State: domain.State{Type: domain.Failed, Name: domain.NameFailed, Timestamp: s.now(), Message: "a test firing"}}}
	err = s.store.InTx(ctx, func(tx pgx.Tx) error {
		return recordFirings(ctx, tx, s.store, s.river, actor, []firing{f})
	})
	if err != nil {
		return uuid.Nil, err
	}
	return f.id(), nil
}

// AutomationDeliveries returns the automation's latest deliveries, newest
// first, each with its attempts.
func (s *Service) AutomationDeliveries(ctx context.Context, id uuid.UUID, limit int) ([]domain.Delivery, error) {
	if _, err := s.AutomationGet(ctx, id); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 500 {
		limit = 100
	}
	return s.deliveries(ctx, `WHERE d.automation_id = $1 ORDER BY d.created_at DESC, d.firing_id, d.action LIMIT $2`, id, limit)
}

// deliveries lists the deliveries that where (the WHERE clause and what
// follows it) keeps, each with its attempts.
func (s *Service) deliveries(ctx context.Context, where string, args ...any) ([]domain.Delivery, error) {
	rows, err := s.store.Pool().Query(ctx, `
SELECT d.firing_id, d.action, d.action_type, d.target, d.status, d.attempts, d.last_status_code, d.last_error,
       f.trigger_position, f.trigger_type, f.trigger_kind, f.trigger_window, f.flow_run_id, f.task_run_id, d.created_at, d.updated_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object('attempt', a.attempt, 'status_code', a.status_code,
           'latency_ms', a.latency_ms, 'error', a.error, 'at', a.at) ORDER BY a.attempt)
         FROM automation_delivery_attempts a WHERE a.firing_id = d.firing_id AND a.action = d.action), '[]')
FROM automation_deliveries d JOIN automation_firings f ON f.id = d.firing_id
`+where, args...)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (domain.Delivery, error) {
		var d domain.Delivery
		var attempts []byte
		err := r.Scan(&d.FiringID, &d.Action, &d.ActionType, &d.Target, &d.Status, &d.Attempts, &d.LastStatusCode, &d.LastError,
			&d.TriggerPosition, &d.TriggerType, &d.TriggerKind, &d.Window, &d.FlowRunID, &d.TaskRunID, &d.CreatedAt, &d.UpdatedAt, &attempts)
		if err != nil {
			return d, err
		}
		return d, json.Unmarshal(attempts, &d.AttemptList)
	})
}
