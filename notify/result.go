package notify

import (
	"fmt"
	"time"
)

// Result is what one delivery attempt saw, kept with the attempt.
type Result struct {
	StatusCode int           // HTTP status, or the SMTP reply code of the failing or last step
	Latency    time.Duration // from the first byte sent to the answer (or failure)
	Excerpt    string        // the start of the receiver's answer, capped
}

// Error is a failed delivery: which step failed and whether a retry may
// help. Its message never holds a credential.
type Error struct {
	Step      string // dial, starttls, auth, mail, rcpt, data, post, status, ...
	Code      int    // HTTP status or SMTP reply code; 0 when none came
	Msg       string
	Permanent bool  // the receiver refused for good (SMTP 5xx, HTTP 4xx other than 408/429)
	cause     error // for errors.Is, e.g. the caller's dialer refusing an address
}

// Unwrap returns the error that made the step fail, when kept.
func (e *Error) Unwrap() error { return e.cause }

func (e *Error) Error() string {
	if e.Code != 0 {
		return fmt.Sprintf("%s: %d %s", e.Step, e.Code, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Step, e.Msg)
}
