package notify_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/ordoflow/ordo/notify"
)

// selfSigned is a certificate for 127.0.0.1 and the pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "smtp test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// received is one message as the SMTP server got it.
type received struct {
	from  string
	rcpts []string
	data  []byte
	tls   bool
	user  string
}

// mailbox is the server's backend: it checks PLAIN credentials and keeps
// what arrives.
type mailbox struct {
	mu        sync.Mutex
	msgs      []received
	commands  []string // MAIL and AUTH as they came, to see what a refused send did not do
	user      string
	pass      string
	stallData chan struct{} // when set, DATA waits on it
	plainAuth bool          // offer AUTH without TLS
}

func (b *mailbox) NewSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	return &session{box: b, cur: received{tls: isTLS}, conn: c}, nil
}

func (b *mailbox) saw(cmd string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.commands = append(b.commands, cmd)
}

func (b *mailbox) messages() []received {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]received(nil), b.msgs...)
}

func (b *mailbox) seen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.commands...)
}

type session struct {
	box  *mailbox
	conn *smtp.Conn
	cur  received
}

func (s *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *session) Auth(string) (sasl.Server, error) {
	s.box.saw("AUTH")
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != s.box.user || pass != s.box.pass {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		s.cur.user = user
		return nil
	}), nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.box.saw("MAIL")
	if s.box.user != "" && s.cur.user == "" {
		return smtp.ErrAuthRequired
	}
	s.cur.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.cur.rcpts = append(s.cur.rcpts, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	if s.box.stallData != nil {
		<-s.box.stallData
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, s.cur.tls = s.conn.TLSConnectionState()
	s.cur.data = data
	s.box.mu.Lock()
	s.box.msgs = append(s.box.msgs, s.cur)
	s.box.mu.Unlock()
	return nil
}

func (s *session) Reset()        { s.cur = received{tls: s.cur.tls, user: s.cur.user} }
func (s *session) Logout() error { return nil }

// smtpServer starts an SMTP server on loopback for box, offering STARTTLS
// when withTLS, and returns a config that reaches it and trusts its
// certificate.
func smtpServer(t *testing.T, box *mailbox, withTLS bool) notify.SMTPConfig {
	t.Helper()
	srv := smtp.NewServer(box)
	srv.Domain = "localhost"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	srv.AllowInsecureAuth = box.plainAuth
	cfg := notify.SMTPConfig{From: "Ordo <ordo@example.com>", Username: box.user, Password: box.pass}
	if withTLS {
		cert, pool := selfSigned(t)
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		cfg.TLSConfig = &tls.Config{RootCAs: pool}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	cfg.Addr = l.Addr().String()
	return cfg
}

func TestEmailArrivesOverSTARTTLS(t *testing.T) {
	t.Parallel()
	box := &mailbox{user: "ordo", pass: "s3cret-pass"}
	cfg := smtpServer(t, box, true)
	subject := "Échec de model_training ✗"
	body := "The run failed.\n.a line starting with a dot\n" + strings.Repeat("long ", 40) + "\nCafé\n"
	to := []string{"ops@example.com", "Zoë Ops <zoe@example.com>"}

	for range 2 { // a retry of the same firing
		res, err := notify.SendEmail(t.Context(), cfg, to, subject, body, "auto-1:4242")
		if err != nil || res.StatusCode != 250 {
			t.Fatalf("SendEmail = %+v, %v", res, err)
		}
	}
	msgs := box.messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages arrived, want 2", len(msgs))
	}
	wantID := notify.MessageID("auto-1:4242", cfg.From)
	for _, m := range msgs {
		if !m.tls || m.user != "ordo" || m.from != "ordo@example.com" || strings.Join(m.rcpts, ",") != "ops@example.com,zoe@example.com" {
			t.Errorf("envelope: tls %v, user %q, from %q, rcpts %q", m.tls, m.user, m.from, m.rcpts)
		}
		if bytes.Contains(bytes.ReplaceAll(m.data, []byte("\r\n"), nil), []byte("\n")) {
			t.Error("a line does not end in CRLF")
		}
		msg, err := mail.ReadMessage(bytes.NewReader(m.data))
		if err != nil {
			t.Fatal(err)
		}
		dec := new(mime.WordDecoder)
		gotSubject, _ := dec.DecodeHeader(msg.Header.Get("Subject"))
		gotTo, _ := msg.Header.AddressList("To")
		gotFrom, _ := msg.Header.AddressList("From")
		if gotSubject != subject || len(gotTo) != 2 || gotTo[1].Name != "Zoë Ops" || gotFrom[0].Address != "ordo@example.com" {
			t.Errorf("headers: subject %q, to %v, from %v", gotSubject, gotTo, gotFrom)
		}
		if !isASCII(msg.Header.Get("Subject")) {
			t.Errorf("the subject header is not RFC 2047 encoded: %q", msg.Header.Get("Subject"))
		}
		if got := msg.Header.Get("Message-ID"); got != wantID || !strings.HasSuffix(got, "@example.com>") {
			t.Errorf("Message-ID = %q, want %q on every retry", got, wantID)
		}
		gotBody, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.ReplaceAll(string(gotBody), "\r\n", "\n"); got != body {
			t.Errorf("body = %q, want %q", got, body)
		}
	}
}

func isASCII(s string) bool {
	for _, r := range s {
		if r > 127 {
			return false
		}
	}
	return true
}

// TestEmailFailuresNameTheStep: each refusal says where it happened and
// shows no password, and a refused send gets no further than it must.
func TestEmailFailuresNameTheStep(t *testing.T) {
	t.Parallel()
	const password = "hunter2-very-secret"
	cases := []struct {
		name      string
		box       *mailbox
		withTLS   bool
		edit      func(*notify.SMTPConfig)
		step      string
		code      int
		permanent bool
		notSeen   string // a command the server must not have received
	}{
		{name: "STARTTLSRequiredButNotOffered", box: &mailbox{}, step: "starttls", permanent: true, notSeen: "MAIL"},
		{name: "WrongPassword", box: &mailbox{user: "ordo", pass: "right"}, withTLS: true,
			edit: func(c *notify.SMTPConfig) { c.Password = password }, step: "auth", code: 535, permanent: true, notSeen: "MAIL"},
		{name: "NoCredentialsWithoutTLS", box: &mailbox{user: "ordo", pass: password, plainAuth: true}, withTLS: true,
			edit: func(c *notify.SMTPConfig) { c.StartTLS = notify.StartTLSOff }, step: "auth", permanent: true, notSeen: "AUTH"},
		{name: "UntrustedCertificate", box: &mailbox{}, withTLS: true,
			edit: func(c *notify.SMTPConfig) { c.TLSConfig = nil }, step: "starttls", notSeen: "MAIL"},
		{name: "BadRecipient", box: &mailbox{}, edit: func(c *notify.SMTPConfig) { c.StartTLS = notify.StartTLSOpportunistic },
			step: "message", permanent: true, notSeen: "MAIL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := smtpServer(t, tc.box, tc.withTLS)
			if tc.edit != nil {
				tc.edit(&cfg)
			}
			to := []string{"ops@example.com"}
			if tc.name == "BadRecipient" {
				to = []string{"ops@example.com\r\nBcc: all@example.com"}
			}
			_, err := notify.SendEmail(t.Context(), cfg, to, "s", "b", "k")
			var e *notify.Error
			if !errors.As(err, &e) || e.Step != tc.step || e.Code != tc.code || e.Permanent != tc.permanent {
				t.Fatalf("err = %#v, want step %s, code %d, permanent %v", err, tc.step, tc.code, tc.permanent)
			}
			if !strings.HasPrefix(err.Error(), tc.step+": ") || strings.Contains(err.Error(), password) {
				t.Errorf("error %q does not start with its step or shows the password", err)
			}
			for _, c := range tc.box.seen() {
				if c == tc.notSeen {
					t.Errorf("the server received %s", c)
				}
			}
			if len(tc.box.messages()) != 0 {
				t.Error("a message arrived")
			}
		})
	}
}

// TestEmailStalledServerTimesOut: a server that never greets, and one that
// stalls after DATA, hold a send only until SendTimeout.
func TestEmailStalledServerTimesOut(t *testing.T) {
	t.Parallel()
	t.Run("NoGreeting", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var (
			mu    sync.Mutex
			conns []net.Conn // held open, silent, until the test ends
		)
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
		t.Cleanup(func() {
			l.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
		})
		// The time-out covers the connection too: on a loaded machine a
		// connection to localhost can take longer than a short one, and
		// then it is the connection that times out. The test is of the
		// greeting, so it tries again with twice the time until the
		// connection was made in time.
		for timeout := 200 * time.Millisecond; ; timeout *= 2 {
			cfg := notify.SMTPConfig{Addr: l.Addr().String(), From: "ordo@example.com", SendTimeout: timeout}
			_, err = notify.SendEmail(t.Context(), cfg, []string{"ops@example.com"}, "s", "b", "k")
			var e *notify.Error
			if errors.As(err, &e) && e.Step == "dial" && timeout < time.Minute {
				t.Logf("the connection itself took longer than %s; again with twice the time", timeout)
				continue
			}
			if !errors.As(err, &e) || e.Step != "greeting" || !strings.Contains(e.Msg, "timed out") || e.Permanent {
				t.Fatalf("err = %v, want a retryable time-out at the greeting", err)
			}
			break
		}
	})
	t.Run("StallAfterData", func(t *testing.T) {
		t.Parallel()
		box := &mailbox{stallData: make(chan struct{})}
		cfg := smtpServer(t, box, true)
		t.Cleanup(func() { close(box.stallData) })
		cfg.SendTimeout = 300 * time.Millisecond
		_, err := notify.SendEmail(context.Background(), cfg, []string{"ops@example.com"}, "s", "b", "k")
		var e *notify.Error
		if !errors.As(err, &e) || e.Step != "data" || !strings.Contains(e.Msg, "timed out") || e.Permanent {
			t.Fatalf("err = %v, want a retryable time-out at data", err)
		}
	})
}

func TestSMTPConfigFromEnv(t *testing.T) {
	t.Parallel()
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	if _, err := notify.SMTPConfigFromEnv(env()); !errors.Is(err, notify.ErrNoSMTP) {
		t.Errorf("unset: %v, want ErrNoSMTP", err)
	}
	cfg, err := notify.SMTPConfigFromEnv(env("ORDO_SMTP_ADDR", "mail.example.com:587", "ORDO_SMTP_FROM", "Ordo <ordo@example.com>",
		"ORDO_SMTP_USERNAME", "u", "ORDO_SMTP_PASSWORD", "p"))
	if err != nil || cfg.Addr != "mail.example.com:587" || cfg.Username != "u" || cfg.Password != "p" || cfg.StartTLS != "" {
		t.Errorf("cfg = %+v, %v", cfg, err)
	}
	for _, bad := range []struct{ name, key, value string }{
		{"ORDO_SMTP_ADDR", "ORDO_SMTP_ADDR", "mail.example.com"},
		{"ORDO_SMTP_FROM", "ORDO_SMTP_FROM", "not an address"},
		{"ORDO_SMTP_STARTTLS", "ORDO_SMTP_STARTTLS", "maybe"},
	} {
		vars := map[string]string{"ORDO_SMTP_ADDR": "m:25", "ORDO_SMTP_FROM": "o@example.com", bad.key: bad.value}
		_, err := notify.SMTPConfigFromEnv(func(k string) string { return vars[k] })
		if err == nil || !strings.Contains(err.Error(), bad.name) {
			t.Errorf("%s=%q: %v, want an error naming it", bad.key, bad.value, err)
		}
	}
}
