// Package notify turns an automation's firing into the text people read and
// sends it: the template Context a message may name, templates checked when
// an automation is saved, Slack incoming-webhook messages and email over
// SMTP. It holds no state and records nothing; the caller (the delivery job)
// decides retries from the Result and the *Error it gets back.
//
// It must never import River, the API or the event store.
package notify
