package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// SlackTimeout bounds one PostSlack, answer included, when ctx allows more.
const SlackTimeout = 10 * time.Second

// Caps on what is read of a receiver's answer and kept of it.
const (
	maxAnswer  = 64 << 10
	maxExcerpt = 512
)

// Slack's limits on a section's text and on a field's.
const (
	slackSectionMax = 3000
	slackFieldMax   = 2000
)

type slackText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type slackBlock struct {
	Type   string      `json:"type"`
	Text   *slackText  `json:"text,omitempty"`
	Fields []slackText `json:"fields,omitempty"`
}

// SlackPayload is an incoming-webhook message: text (rendered from the
// automation's slack template) and blocks with the deployment, the run's
// name linked to its page, the state and the failure's message. Values taken
// from the run are escaped so that they cannot mention or link.
func SlackPayload(c Context, text string) ([]byte, error) {
	if strings.TrimSpace(text) == "" {
		text = slackEscape(c.Trigger.Description)
	}
	if strings.TrimSpace(text) == "" {
		return nil, errors.New("slack message: empty text")
	}
	blocks := []slackBlock{{Type: "section", Text: &slackText{"mrkdwn", cut(text, slackSectionMax)}}}
	var fields []slackText
	field := func(label, value string) {
		if value != "" {
			fields = append(fields, slackText{"mrkdwn", cut("*"+label+"*\n"+value, slackFieldMax)})
		}
	}
	field("Deployment", slackEscape(c.FlowRun.DeploymentName))
	run := slackEscape(c.FlowRun.Name)
	if run == "" {
		run = slackEscape(c.FlowRun.ID)
	}
	if run != "" && c.RunURL != "" && !strings.ContainsAny(c.RunURL, "|<> ") {
		run = "<" + c.RunURL + "|" + run + ">"
	}
	field("Run", run)
	if c.TaskRun.TaskName != "" {
		field("Task", slackEscape(c.TaskRun.TaskName))
	}
	state := c.FlowRun.State
	if c.TaskRun.State.Type != "" {
		state = c.TaskRun.State
	}
	if state.Type != "" {
		s := state.Type
		if state.Name != "" && !strings.EqualFold(state.Name, state.Type) {
			s += " (" + state.Name + ")"
		}
		field("State", slackEscape(s))
	}
	if len(fields) > 0 {
		blocks = append(blocks, slackBlock{Type: "section", Fields: fields})
	}
	msg := c.TaskRun.Error
	if msg == "" {
		msg = c.FlowRun.State.Message
	}
	if msg != "" {
		msg = strings.ReplaceAll(slackEscape(msg), "```", "'''")
		blocks = append(blocks, slackBlock{Type: "section", Text: &slackText{"mrkdwn", cut("*Message*\n```"+cut(msg, slackSectionMax-32)+"```", slackSectionMax)}})
	}
	return json.Marshal(struct {
		Text   string       `json:"text"`
		Blocks []slackBlock `json:"blocks"`
	}{cut(text, MaxOutput), blocks})
}

// PostSlack posts payload to a Slack incoming-webhook URL. client decides
// where it may connect (the caller's, refusing private addresses unless
// allowed); nil means a plain client. The whole exchange is bounded by ctx
// and SlackTimeout, at most maxAnswer bytes of the answer are read, and the
// Result is filled even when the answer is not 2xx. The URL, which holds
// the webhook's secret, is never in the error.
func PostSlack(ctx context.Context, client *http.Client, url string, payload []byte) (Result, error) {
	if client == nil {
		client = &http.Client{}
	}
	ctx, cancel := context.WithTimeout(ctx, SlackTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		return Result{}, &Error{Step: "request", Msg: "invalid webhook URL", Permanent: true}
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return Result{Latency: time.Since(start)}, &Error{Step: "post", Msg: withoutURL(err), cause: causeOf(err)}
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	res := Result{StatusCode: resp.StatusCode, Latency: time.Since(start), Excerpt: excerpt(answer)}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return res, &Error{Step: "status", Code: resp.StatusCode, Msg: res.Excerpt, Permanent: permanentHTTP(resp.StatusCode)}
	}
	return res, nil
}

// permanentHTTP: a 4xx other than timeout and rate limit will not change
// on a retry.
func permanentHTTP(code int) bool {
	return code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests
}

// causeOf is err without the url.Error that holds the URL.
func causeOf(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func withoutURL(err error) string { return causeOf(err).Error() }

func excerpt(b []byte) string {
	return strings.ToValidUTF8(cut(string(b), maxExcerpt), "")
}

// cut shortens s to at most n bytes without splitting a rune.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

func slackEscape(s string) string { return slackEscaper.Replace(s) }
