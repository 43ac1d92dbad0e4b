package automations_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/uuid"
	"github.com/riverqueue/river"

	"github.com/ordoflow/ordo/automations"
	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/jobs"
	"github.com/ordoflow/ordo/notify"
)

// automate saves an automation that fires on the given flow run states.
func (b bundle) automate(t *testing.T, states []string, actions ...domain.AutomationAction) domain.Automation {
	t.Helper()
	a, err := b.svc.AutomationCreate(context.Background(), domain.AutomationSpec{
		Name:    "actions " + uuid.NewString()[:8],
		Trigger: domain.AutomationTrigger{Type: domain.TriggerState, Of: domain.StreamFlowRun, States: states},
		Actions: actions,
	}, "test")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// appendRun records a flow run with parameters and the given events after
// its creation, straight into the log.
func (b bundle) appendRun(t *testing.T, deployment string, params map[string]any, events ...domain.Event) uuid.UUID {
	t.Helper()
	id := uuid.New()
	created := domain.FlowRunCreated{Name: "run-" + id.String()[:4], DeploymentName: deployment, WorkQueue: "default",
		Tags: []string{"prod"}, Parameters: params, Flow: domain.FlowSpec{Name: "ml"}, ScheduledAt: time.Now()}
	if _, err := b.store.AppendAlone(context.Background(), eventstore.Append{StreamID: id,
		Events: append([]domain.Event{created}, events...), Metadata: domain.Metadata{Actor: "test"}}); err != nil {
		t.Fatal(err)
	}
	b.store.Committed()
	return id
}

// deliverAgain runs the finished delivery job of a firing's action once
// more, as River would after a crash between acting and recording it.
func (b bundle) deliverAgain(t *testing.T, firing uuid.UUID, action int) {
	t.Helper()
	ctx := context.Background()
	var raw []byte
	if err := b.pool.QueryRow(ctx, `SELECT args FROM river_job WHERE kind = $1 AND args->>'firing_id' = $2 AND (args->>'action')::int = $3`,
		automations.KindDelivery, firing.String(), action).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var args automations.DeliveryArgs
	if err := json.Unmarshal(raw, &args); err != nil {
		t.Fatal(err)
	}
	res, err := b.river.Insert(ctx, args, &river.InsertOpts{Queue: automations.QueueAutomations})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the repeated delivery ends", func() bool {
		return b.count(t, `SELECT count(*) FROM river_job WHERE id = $1 AND state = 'completed'`, res.Job.ID) == 1
	})
}

func TestSlackMessageNamesTheRunAndLinksToIt(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got [][]byte
	slack := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("Content-Type = %q", r.Header.Get("Content-Type"))
		}
		mu.Lock()
		got = append(got, body)
		mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(slack.Close)
	b := setup(t, automations.DeliveryOptions{AllowPrivate: true, PublicURL: "https://ordo.example/"})
	a := b.automate(t, []string{"FAILED"}, domain.AutomationAction{Type: domain.ActionSlack, URL: slack.URL + "/services/T0/B0/secret",
		Text: `{{.FlowRun.DeploymentName}} failed on {{index .FlowRun.Parameters "table"}}`})
	b.consumer(t)
	run := b.appendRun(t, "model_train", map[string]any{"table": "houses"}, domain.FlowRunPending{}, domain.FlowRunStarted{},
		domain.FlowRunFailed{Message: "task train failed: empty table"})
	ds := b.settled(t, a.ID, 1)
	if d := ds[0]; d.Status != "delivered" || d.ActionType != "slack" || strings.Contains(d.Target, "secret") || *d.LastStatusCode != 200 {
		t.Fatalf("delivery = %+v", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("slack got %d messages, want 1", len(got))
	}
	var msg struct {
		Text   string `json:"text"`
		Blocks []struct {
			Text   *struct{ Text string }  `json:"text"`
			Fields []struct{ Text string } `json:"fields"`
		} `json:"blocks"`
	}
	if err := json.Unmarshal(got[0], &msg); err != nil {
		t.Fatal(err)
	}
	if msg.Text != "model_train failed on houses" {
		t.Fatalf("text = %q", msg.Text)
	}
	var all []string
	for _, bl := range msg.Blocks {
		if bl.Text != nil {
			all = append(all, bl.Text.Text)
		}
		for _, f := range bl.Fields {
			all = append(all, f.Text)
		}
	}
	joined := strings.Join(all, "\n")
	for _, want := range []string{"*Deployment*\nmodel_train", "<https://ordo.example/runs/" + run.String() + "|run-" + run.String()[:4] + ">",
		"*State*\nFAILED", "task train failed: empty table"} {
		if !strings.Contains(joined, want) {
			t.Errorf("message lacks %q:\n%s", want, joined)
		}
	}
}

func TestSlackToAPrivateAddressIsRefused(t *testing.T) {
	t.Parallel()
	var hits int
	var mu sync.Mutex
	slack := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { mu.Lock(); hits++; mu.Unlock() }))
	t.Cleanup(slack.Close)
	b := setup(t, automations.DeliveryOptions{})
	spec := domain.AutomationSpec{Name: "private slack", Trigger: domain.AutomationTrigger{Type: domain.TriggerState, Of: domain.StreamFlowRun, States: []string{"FAILED"}},
		Actions: []domain.AutomationAction{{Type: domain.ActionSlack, URL: slack.URL + "/hook"}}}
	refusing := automations.NewService(b.store, b.river, automations.ServiceOptions{})
	if _, err := refusing.AutomationCreate(context.Background(), spec, "test"); domain.ErrorCode(err) != domain.CodeInvalid || !strings.Contains(err.Error(), "actions[0].url") {
		t.Fatalf("saving a loopback Slack URL: err = %v", err)
	}
	// Saved where allowed, it is still refused by a server that is not.
	a := b.automate(t, []string{"FAILED"}, spec.Actions...)
	b.consumer(t)
	b.appendRun(t, "d", nil, domain.FlowRunPending{}, domain.FlowRunStarted{}, domain.FlowRunFailed{Message: "x"})
	ds := b.settled(t, a.ID, 1)
	if d := ds[0]; d.Status != "dead" || d.Attempts != 1 || d.LastError == nil || !strings.Contains(*d.LastError, "ORDO_WEBHOOK_ALLOW_PRIVATE") {
		t.Fatalf("delivery = %+v", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if hits != 0 {
		t.Fatalf("the private receiver got %d requests", hits)
	}
}

func TestBadTemplateIsRefusedWhenSaved(t *testing.T) {
	t.Parallel()
	b := setup(t, automations.DeliveryOptions{})
	for field, action := range map[string]domain.AutomationAction{
		"actions[0].text":    {Type: domain.ActionSlack, URL: "https://hooks.example.com/x", Text: "{{.FlowRun.Nmae}}"},
		"actions[0].subject": {Type: domain.ActionEmail, To: []string{"ops@example.com"}, Subject: "{{.Automation.Name"},
		"actions[0].body":    {Type: domain.ActionEmail, To: []string{"ops@example.com"}, Body: "{{.Nope}}"},
	} {
		_, err := b.svc.AutomationCreate(context.Background(), domain.AutomationSpec{Name: "bad " + field,
			Trigger: domain.AutomationTrigger{Type: domain.TriggerState, Of: domain.StreamFlowRun, States: []string{"FAILED"}},
			Actions: []domain.AutomationAction{action}}, "test")
		if domain.ErrorCode(err) != domain.CodeInvalid || !strings.Contains(err.Error(), field+": bad template") {
			t.Errorf("%s: err = %v", field, err)
		}
	}
	if n := b.count(t, `SELECT count(*) FROM automations`); n != 0 {
		t.Fatalf("%d automations saved", n)
	}
}

// mailbox is an SMTP server's backend that keeps what arrives and whether
// it came over TLS.
type mailbox struct {
	mu   sync.Mutex
	msgs []string
	tls  []bool
}

func (m *mailbox) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &mailSession{m: m, c: c}, nil
}

type mailSession struct {
	m *mailbox
	c *smtp.Conn
}

func (s *mailSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *mailSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *mailSession) Reset()                               {}
func (s *mailSession) Logout() error                        { return nil }
func (s *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	_, isTLS := s.c.TLSConnectionState()
	s.m.mu.Lock()
	s.m.msgs, s.m.tls = append(s.m.msgs, string(b)), append(s.m.tls, isTLS)
	s.m.mu.Unlock()
	return err
}

// startTLSServer runs an SMTP server offering STARTTLS on loopback.
func startTLSServer(t *testing.T, box *mailbox) notify.SMTPConfig {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	srv := smtp.NewServer(box)
	srv.Domain, srv.ErrorLog = "localhost", log.New(io.Discard, "", 0)
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return notify.SMTPConfig{Addr: l.Addr().String(), From: "Ordo <ordo@example.com>", StartTLS: notify.StartTLSRequired,
		TLSConfig: &tls.Config{RootCAs: roots}}
}

func TestEmailArrivesOverSTARTTLS(t *testing.T) {
	t.Parallel()
	box := &mailbox{}
	cfg := startTLSServer(t, box)
	b := setup(t, automations.DeliveryOptions{SMTP: &cfg, PublicURL: "http://ordo.example"})
	a := b.automate(t, []string{"CRASHED"}, domain.AutomationAction{Type: domain.ActionEmail, To: []string{"ops@example.com"},
		Subject: "{{.FlowRun.DeploymentName}} {{.FlowRun.State.Type}}"})
	b.consumer(t)
	run := b.appendRun(t, "nightly", nil, domain.FlowRunPending{}, domain.FlowRunStarted{}, domain.FlowRunCrashed{Message: "worker lost"})
	ds := b.settled(t, a.ID, 1)
	if d := ds[0]; d.Status != "delivered" || d.Target != "ops@example.com" || *d.LastStatusCode != 250 {
		t.Fatalf("delivery = %+v", d)
	}
	box.mu.Lock()
	defer box.mu.Unlock()
	if len(box.msgs) != 1 || !box.tls[0] {
		t.Fatalf("%d messages, over TLS %v", len(box.msgs), box.tls)
	}
	for _, want := range []string{"Subject: nightly CRASHED", "To: <ops@example.com>", "worker lost", "http://ordo.example/runs/" + run.String()} {
		if !strings.Contains(box.msgs[0], want) {
			t.Errorf("message lacks %q:\n%s", want, box.msgs[0])
		}
	}
}

// ordoSetup is setup with the commands the Ordo actions run.
func ordoSetup(t *testing.T) (bundle, *commands.DeploymentCommands) {
	t.Helper()
	ordo := &lateOrdo{}
	b := setup(t, automations.DeliveryOptions{Ordo: ordo})
	ins, err := jobs.NewInsertClient(b.pool)
	if err != nil {
		t.Fatal(err)
	}
	svc := commands.NewService(b.pool, b.store, jobs.RiverEnqueuer(ins), commands.ServiceOptions{})
	deployments := commands.NewDeploymentCommands(b.store)
	ordo.p.Store(commands.NewAutomationActions(svc, deployments))
	return b, deployments
}

// lateOrdo is the commands' actions, made after the River client that
// delivers (setup makes the pool and the client together).
type lateOrdo struct {
	p atomic.Pointer[commands.AutomationActions]
}

func (l *lateOrdo) RunCancel(ctx context.Context, id uuid.UUID, actor string) error {
	return l.p.Load().RunCancel(ctx, id, actor)
}

func (l *lateOrdo) DeploymentPause(ctx context.Context, name, actor string) error {
	return l.p.Load().DeploymentPause(ctx, name, actor)
}

func (l *lateOrdo) RunStart(ctx context.Context, d string, p map[string]any, key, actor string) (uuid.UUID, error) {
	return l.p.Load().RunStart(ctx, d, p, key, actor)
}

func TestCancelRunCancelsTheRunningRunOnce(t *testing.T) {
	t.Parallel()
	b, _ := ordoSetup(t)
	a := b.automate(t, []string{"RUNNING"}, domain.AutomationAction{Type: domain.ActionCancelRun})
	b.consumer(t)
	run := b.appendRun(t, "d", nil, domain.FlowRunPending{}, domain.FlowRunStarted{})
	ds := b.settled(t, a.ID, 1)
	if ds[0].Status != "delivered" {
		t.Fatalf("delivery = %+v", ds[0])
	}
	b.deliverAgain(t, ds[0].FiringID, 0)
	cancels := b.count(t, `SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'FlowRunCancelling'`, run)
	var actor string
	if err := b.pool.QueryRow(context.Background(), `SELECT metadata->>'actor' FROM events WHERE stream_id = $1 AND type = 'FlowRunCancelling'`, run).Scan(&actor); err != nil {
		t.Fatal(err)
	}
	if cancels != 1 || actor != "automation:"+a.Spec.Name {
		t.Fatalf("%d FlowRunCancelling events by %q, want 1 by the automation", cancels, actor)
	}
	verifyLog(t, b)
}

func TestRunDeploymentStartsOneRunPerFiring(t *testing.T) {
	t.Parallel()
	b, deployments := ordoSetup(t)
	ctx := context.Background()
	if _, _, err := deployments.DeploymentSave(ctx, domain.DeploymentSpec{Name: "cleanup", WorkQueue: "default",
		Parameters: map[string]any{"table": "none", "failed_run": "", "force": false},
		Flow:       domain.FlowSpec{Name: "cleanup", Tasks: []domain.TaskSpec{{Name: "clean", Command: []string{"true"}}}}}, "test"); err != nil {
		t.Fatal(err)
	}
	a := b.automate(t, []string{"FAILED"}, domain.AutomationAction{Type: domain.ActionRunDeployment, Deployment: "cleanup",
		Parameters: map[string]any{"force": true}, FromRun: map[string]string{"table": "table", "failed_run": domain.FromRunID}})
	b.consumer(t)
	failed := b.appendRun(t, "model_train", map[string]any{"table": "houses"}, domain.FlowRunPending{}, domain.FlowRunStarted{}, domain.FlowRunFailed{Message: "x"})
	ds := b.settled(t, a.ID, 1)
	if ds[0].Status != "delivered" {
		t.Fatalf("delivery = %+v", ds[0])
	}
	b.deliverAgain(t, ds[0].FiringID, 0)
	rows, err := b.pool.Query(ctx, `SELECT data->'parameters', metadata->>'actor' FROM events WHERE type = 'FlowRunCreated' AND data->>'deployment_name' = 'cleanup'`)
	if err != nil {
		t.Fatal(err)
	}
	type created struct {
		params map[string]any
		actor  string
	}
	var runs []created
	for rows.Next() {
		var c created
		if err := rows.Scan(&c.params, &c.actor); err != nil {
			t.Fatal(err)
		}
		runs = append(runs, c)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if len(runs) != 1 {
		t.Fatalf("%d runs of cleanup, want 1", len(runs))
	}
	if p := runs[0].params; p["table"] != "houses" || p["failed_run"] != failed.String() || p["force"] != true || runs[0].actor != "automation:"+a.Spec.Name {
		t.Fatalf("run = %+v", runs[0])
	}
	verifyLog(t, b)
}

func TestPauseDeploymentPausesTheRunsDeployment(t *testing.T) {
	t.Parallel()
	b, deployments := ordoSetup(t)
	ctx := context.Background()
	d, _, err := deployments.DeploymentSave(ctx, domain.DeploymentSpec{Name: "flaky", WorkQueue: "default",
		Flow: domain.FlowSpec{Name: "f", Tasks: []domain.TaskSpec{{Name: "t", Command: []string{"true"}}}}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	a := b.automate(t, []string{"FAILED"}, domain.AutomationAction{Type: domain.ActionPauseDeployment})
	b.consumer(t)
	b.appendRun(t, "flaky", nil, domain.FlowRunPending{}, domain.FlowRunStarted{}, domain.FlowRunFailed{Message: "x"})
	ds := b.settled(t, a.ID, 1)
	if ds[0].Status != "delivered" || ds[0].Target != "" {
		t.Fatalf("delivery = %+v", ds[0])
	}
	b.deliverAgain(t, ds[0].FiringID, 0)
	if got, err := deployments.DeploymentGet(ctx, d.ID); err != nil || !got.Paused {
		t.Fatalf("deployment = %+v, %v", got, err)
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'DeploymentPaused'`, d.ID); n != 1 {
		t.Fatalf("%d DeploymentPaused events, want 1", n)
	}
}
