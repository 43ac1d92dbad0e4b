package notify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"strings"
	"time"
)

// How SendEmail uses STARTTLS.
const (
	StartTLSRequired      = "required"      // fail unless the server offers it
	StartTLSOpportunistic = "opportunistic" // use it when offered
	StartTLSOff           = "off"           // never; AUTH is then refused
)

// ErrNoSMTP: the server has no SMTP settings (ORDO_SMTP_ADDR is unset).
var ErrNoSMTP = errors.New("email is not configured: ORDO_SMTP_ADDR is unset")

// SMTPConfig is where and how email is sent, read from the server's
// environment by SMTPConfigFromEnv.
type SMTPConfig struct {
	// Addr is the server's host:port (ORDO_SMTP_ADDR).
	Addr string
	// Username and Password for AUTH PLAIN, sent only over TLS
	// (ORDO_SMTP_USERNAME, ORDO_SMTP_PASSWORD). No AUTH when Username is empty.
	Username, Password string
	// From is the sender, "Name <addr>" or "addr" (ORDO_SMTP_FROM).
	From string
	// StartTLS is required, opportunistic or off (ORDO_SMTP_STARTTLS).
	// Defaults to required.
	StartTLS string
	// TLSConfig verifies the server's certificate. Defaults to the system's
	// roots with the host of Addr as the server name.
	TLSConfig *tls.Config
	// HelloName is the name given in EHLO. Defaults to "localhost".
	HelloName string
	// DialTimeout bounds the connection. Defaults to 10s.
	DialTimeout time.Duration
	// SendTimeout bounds the whole exchange, dial included. Defaults to 30s.
	SendTimeout time.Duration
}

// SMTPConfigFromEnv reads the ORDO_SMTP_* variables through getenv
// (os.Getenv in the server). ErrNoSMTP when ORDO_SMTP_ADDR is unset.
func SMTPConfigFromEnv(getenv func(string) string) (SMTPConfig, error) {
	cfg := SMTPConfig{
		Addr:     getenv("ORDO_SMTP_ADDR"),
		Username: getenv("ORDO_SMTP_USERNAME"),
		Password: getenv("ORDO_SMTP_PASSWORD"),
		From:     getenv("ORDO_SMTP_FROM"),
		StartTLS: getenv("ORDO_SMTP_STARTTLS"),
	}
	if cfg.Addr == "" {
		return SMTPConfig{}, ErrNoSMTP
	}
	return cfg, cfg.validate()
}

func (c SMTPConfig) validate() error {
	if _, port, err := net.SplitHostPort(c.Addr); err != nil || port == "" {
		return fmt.Errorf("ORDO_SMTP_ADDR: want host:port, got %q", c.Addr)
	}
	if _, err := mail.ParseAddress(c.From); err != nil {
		return fmt.Errorf("ORDO_SMTP_FROM: %v", err)
	}
	switch c.StartTLS {
	case "", StartTLSRequired, StartTLSOpportunistic, StartTLSOff:
	default:
		return fmt.Errorf("ORDO_SMTP_STARTTLS: want required, opportunistic or off, got %q", c.StartTLS)
	}
	if c.Password != "" && c.Username == "" {
		return errors.New("ORDO_SMTP_PASSWORD is set without ORDO_SMTP_USERNAME")
	}
	return nil
}

// SendEmail sends one plain-text message to the recipients. Its Message-ID
// derives from idempotencyKey, so that every retry of one firing sends the
// same one and a receiving system can drop a repeat. An *Error says which
// step failed: config, message, dial, greeting, ehlo, starttls, auth, mail,
// rcpt or data.
func SendEmail(ctx context.Context, cfg SMTPConfig, to []string, subject, body, idempotencyKey string) (Result, error) {
	if err := cfg.validate(); err != nil {
		return Result{}, &Error{Step: "config", Msg: err.Error(), Permanent: true}
	}
	from, _ := mail.ParseAddress(cfg.From)
	rcpts, msg, err := composeEmail(from, to, subject, body, idempotencyKey, time.Now())
	if err != nil {
		return Result{}, &Error{Step: "message", Msg: err.Error(), Permanent: true}
	}
	sendTimeout, dialTimeout := cfg.SendTimeout, cfg.DialTimeout
	if sendTimeout <= 0 {
		sendTimeout = 30 * time.Second
	}
	if dialTimeout <= 0 {
		dialTimeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	start := time.Now()
	s := &smtpSend{cfg: cfg, ctx: ctx}
	err = s.run(dialTimeout, from.Address, rcpts, msg)
	res := Result{StatusCode: s.code, Latency: time.Since(start)}
	if err != nil {
		return res, err
	}
	return res, nil
}

// smtpSend is one exchange with the server; fail turns an error into an
// *Error naming the step, with the password taken out.
type smtpSend struct {
	cfg  SMTPConfig
	ctx  context.Context
	code int
}

func (s *smtpSend) run(dialTimeout time.Duration, from string, rcpts []string, msg []byte) error {
	host, _, _ := net.SplitHostPort(s.cfg.Addr)
	conn, err := (&net.Dialer{Timeout: dialTimeout}).DialContext(s.ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return s.fail("dial", err)
	}
	defer conn.Close()
	if dl, ok := s.ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(s.ctx, func() { conn.Close() })
	defer stop()

	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return s.fail("greeting", err)
	}
	defer c.Close()
	name := s.cfg.HelloName
	if name == "" {
		name = "localhost"
	}
	if err := c.Hello(name); err != nil {
		return s.fail("ehlo", err)
	}
	offered, _ := c.Extension("STARTTLS")
	switch mode := s.cfg.StartTLS; {
	case mode == StartTLSOff:
	case offered:
		tc := &tls.Config{}
		if s.cfg.TLSConfig != nil {
			tc = s.cfg.TLSConfig.Clone()
		}
		if tc.ServerName == "" {
			tc.ServerName = host
		}
		if err := c.StartTLS(tc); err != nil {
			return s.fail("starttls", err)
		}
	case mode == StartTLSOpportunistic:
	default:
		return s.fail("starttls", permanent("the server does not offer STARTTLS and ORDO_SMTP_STARTTLS is required"))
	}
	if s.cfg.Username != "" {
		if _, tlsOn := c.TLSConnectionState(); !tlsOn {
			return s.fail("auth", permanent("refusing to send credentials without TLS"))
		}
		if ok, mechs := c.Extension("AUTH"); !ok || !hasWord(mechs, "PLAIN") {
			return s.fail("auth", permanent("the server does not offer AUTH PLAIN"))
		}
		if err := c.Auth(plainAuth{user: s.cfg.Username, pass: s.cfg.Password}); err != nil {
			return s.fail("auth", err)
		}
	}
	if err := c.Mail(from); err != nil {
		return s.fail("mail", err)
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r); err != nil {
			return s.fail("rcpt", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return s.fail("data", err)
	}
	if _, err := w.Write(msg); err != nil {
		return s.fail("data", err)
	}
	if err := w.Close(); err != nil {
		return s.fail("data", err)
	}
	s.code = 250
	_ = c.Quit() // the message is accepted; a failing QUIT changes nothing
	return nil
}

type permanent string

func (p permanent) Error() string { return string(p) }

func (s *smtpSend) fail(step string, err error) error {
	e := &Error{Step: step, Msg: err.Error()}
	var tp *textproto.Error
	var p permanent
	var ne net.Error
	switch {
	case errors.As(err, &tp):
		e.Code, e.Msg, e.Permanent = tp.Code, tp.Msg, tp.Code >= 500
		s.code = tp.Code
	case errors.As(err, &p):
		e.Permanent = true
	case s.ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout():
		e.Msg = "timed out: " + e.Msg
	}
	if s.cfg.Password != "" {
		e.Msg = strings.ReplaceAll(e.Msg, s.cfg.Password, "[password]")
	}
	return e
}

func hasWord(list, word string) bool {
	for _, w := range strings.Fields(list) {
		if strings.EqualFold(w, word) {
			return true
		}
	}
	return false
}

// plainAuth is AUTH PLAIN that refuses a connection without TLS, on
// loopback too (net/smtp's PlainAuth lets loopback through).
type plainAuth struct{ user, pass string }

func (a plainAuth) Start(server *smtp.ServerInfo) (string, []byte, error) {
	if !server.TLS {
		return "", nil, permanent("refusing to send credentials without TLS")
	}
	return "PLAIN", []byte("\x00" + a.user + "\x00" + a.pass), nil
}

func (a plainAuth) Next(_ []byte, more bool) ([]byte, error) {
	if more {
		return nil, errors.New("unexpected server challenge")
	}
	return nil, nil
}

// composeEmail builds the message: headers encoded (RFC 2047 for what is
// not ASCII), a quoted-printable UTF-8 body, CRLF line endings. It returns
// the envelope recipients too.
func composeEmail(from *mail.Address, to []string, subject, body, idempotencyKey string, now time.Time) ([]string, []byte, error) {
	if len(to) == 0 {
		return nil, nil, errors.New("no recipients")
	}
	if idempotencyKey == "" {
		return nil, nil, errors.New("no idempotency key")
	}
	var rcpts, heads []string
	for _, t := range to {
		a, err := mail.ParseAddress(t)
		if err != nil {
			return nil, nil, fmt.Errorf("recipient %q: %v", t, err)
		}
		rcpts = append(rcpts, a.Address)
		heads = append(heads, a.String())
	}
	subject = strings.Join(strings.Fields(subject), " ")

	var b bytes.Buffer
	header := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	header("From", from.String())
	header("To", strings.Join(heads, ", "))
	header("Subject", mime.QEncoding.Encode("utf-8", subject))
	header("Date", now.Format(time.RFC1123Z))
	header("Message-ID", MessageID(idempotencyKey, from.Address))
	header("Auto-Submitted", "auto-generated")
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	if _, err := qp.Write([]byte(body)); err != nil {
		return nil, nil, err
	}
	if err := qp.Close(); err != nil {
		return nil, nil, err
	}
	return rcpts, b.Bytes(), nil
}

// MessageID is the Message-ID SendEmail gives the message of a firing.
func MessageID(idempotencyKey, from string) string {
	a, err := mail.ParseAddress(from)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256([]byte(idempotencyKey))
	return "<" + hex.EncodeToString(sum[:16]) + "@" + a.Address[strings.LastIndexByte(a.Address, '@')+1:] + ">"
}
