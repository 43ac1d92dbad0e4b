// Package automations runs Ordo's automations: their commands (saved
// through events on each automation's stream, with a row per automation in
// the write-side table automations), the Consumer that reads the event log
// gap-free from its own checkpoint and fires the automations an event
// matches, and the River job that delivers each firing.
//
// A firing is recorded exactly once: the Consumer appends AutomationFired
// on the firing's own stream (its id derived from the automation and the
// triggering event's position, domain.FiringID), inserts its row and its
// delivery jobs, and moves its checkpoint, in one transaction that first
// checks, under a row lock, that the checkpoint is where it read from. A
// second consumer, or the same one after a crash, cannot record it again:
// the checkpoint has moved, and the log's unique (stream, version) and
// automation_firings' unique (automation, position) would refuse it.
//
// Delivery (deliver.go) is at least once: a webhook receiver gets the
// firing's id as Ordo-Idempotency-Key on every attempt. Attempts are kept
// in automation_delivery_attempts; a delivery ends delivered, or dead
// after MaxAttempts or when its target resolves to a loopback, private or
// link-local address (unless AllowPrivate).
//
// Files: service.go (the commands and queries the API calls), fire.go
// (recording a firing with its jobs), consumer.go, deliver.go, rescue.go
// (deliveries left running by a server that stopped).
//
// It depends on domain, eventstore and River; it must never import
// commands, jobs, projections or api.
package automations
