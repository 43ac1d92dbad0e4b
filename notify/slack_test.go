package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ordoflow/ordo/notify"
)

type slackMessage struct {
	Text   string `json:"text"`
	Blocks []struct {
		Type string `json:"type"`
		Text *struct {
			Type, Text string
		} `json:"text"`
		Fields []struct{ Type, Text string } `json:"fields"`
	} `json:"blocks"`
}

// blocksText is every text of the message's blocks, one per line.
func (m slackMessage) blocksText() string {
	var b strings.Builder
	for _, bl := range m.Blocks {
		if bl.Text != nil {
			b.WriteString(bl.Text.Text + "\n")
		}
		for _, f := range bl.Fields {
			b.WriteString(f.Text + "\n")
		}
	}
	return b.String()
}

func TestSlackReceiverGetsTheRunLink(t *testing.T) {
	t.Parallel()
	got := make(chan slackMessage, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m slackMessage
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if r.Header.Get("Content-Type") != "application/json" || dec.Decode(&m) != nil {
			http.Error(w, "invalid_payload", http.StatusBadRequest)
			return
		}
		got <- m
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)

	c := notify.Sample()
	c.TaskRun = notify.TaskRun{}
	c.FlowRun.State.Message = "boom <!channel> & <https://evil.example|click>"
	payload, err := notify.SlackPayload(c, "*ml failures to ops*: flow run reached FAILED")
	if err != nil {
		t.Fatal(err)
	}
	res, err := notify.PostSlack(t.Context(), srv.Client(), srv.URL+"/services/T/B/x", payload)
	if err != nil || res.StatusCode != 200 || res.Excerpt != "ok" {
		t.Fatalf("PostSlack = %+v, %v", res, err)
	}
	m := <-got
	text := m.blocksText()
	for _, want := range []string{
		"*ml failures to ops*: flow run reached FAILED",
		"*Deployment*\nmodel_training_validation",
		"*Run*\n<" + c.RunURL + "|clever-heron>",
		"*State*\nFAILED\n", // the name repeats the type: shown once
		"boom &lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("message lacks %q:\n%s", want, text)
		}
	}
	if m.Text == "" {
		t.Error("no top-level text (the notification's fallback)")
	}
}

func TestSlackTaskRunTrigger(t *testing.T) {
	t.Parallel()
	c := notify.Sample()
	c.TaskRun.State = notify.State{Type: "FAILED", Name: "Retrying"}
	payload, err := notify.SlackPayload(c, "")
	if err != nil {
		t.Fatal(err)
	}
	var m slackMessage
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatal(err)
	}
	text := m.blocksText()
	for _, want := range []string{"flow run reached FAILED", "*Task*\ntrain", "*State*\nFAILED (Retrying)", "ValueError: empty table"} {
		if !strings.Contains(text, want) {
			t.Errorf("message lacks %q:\n%s", want, text)
		}
	}
}

func TestSlackFailingReceiver(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("x", 8<<20)
	cases := []struct {
		name      string
		status    int
		body      string
		permanent bool
	}{
		{"ServerError", 500, "internal trouble", false},
		{"HugeBody", 502, huge, false},
		{"RateLimited", 429, "slow down", false},
		{"NoSuchHook", 404, "no_service", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			t.Cleanup(srv.Close)
			res, err := notify.PostSlack(t.Context(), srv.Client(), srv.URL, []byte(`{"text":"hi"}`))
			var e *notify.Error
			if !errors.As(err, &e) || e.Step != "status" || e.Code != tc.status || e.Permanent != tc.permanent {
				t.Fatalf("err = %#v, want step status, code %d, permanent %v", err, tc.status, tc.permanent)
			}
			if res.StatusCode != tc.status || res.Latency <= 0 {
				t.Errorf("Result = %+v", res)
			}
			if len(res.Excerpt) > 512 || !strings.HasPrefix(tc.body, res.Excerpt) || res.Excerpt == "" {
				t.Errorf("excerpt of %d bytes, want a non-empty start of the body of at most 512", len(res.Excerpt))
			}
			if len(err.Error()) > 1024 {
				t.Errorf("error of %d bytes", len(err.Error()))
			}
		})
	}
}

// TestSlackStalledReceiverTimesOut: a receiver that never answers holds
// the delivery only until ctx's deadline; the error does not show the
// webhook URL, whose path is its secret.
func TestSlackStalledReceiverTimesOut(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := notify.PostSlack(ctx, srv.Client(), srv.URL+"/services/T000/B000/SECRETTOKEN", []byte(`{"text":"hi"}`))
	var e *notify.Error
	if !errors.As(err, &e) || e.Step != "post" || e.Permanent {
		t.Fatalf("err = %v, want a retryable failure at post", err)
	}
	if strings.Contains(err.Error(), "SECRETTOKEN") {
		t.Errorf("the error shows the webhook URL: %v", err)
	}
}
