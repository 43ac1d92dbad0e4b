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
// Delivery (deliver.go, actions.go) is at least once: a webhook receiver
// gets the firing's id as Ordo-Idempotency-Key on every attempt, an email
// the same Message-ID, and the Ordo actions (cancel_run, pause_deployment,
// run_deployment) happen once because what does them, OrdoActions (the
// commands, wired in cmd/ordo), is idempotent for the firing. Attempts are kept
// in automation_delivery_attempts; a delivery ends delivered, or dead
// after MaxAttempts or when its target resolves to a loopback, private or
// link-local address (unless AllowPrivate).
//
// A delivery River finishes without its worker recording it (a job rescued
// as stuck after its last attempt) is made dead by the Sweeper (sweep.go);
// a dead delivery is retried by queueing its River job again (retry.go).
//
// Absence triggers keep open windows (automation_timers) and
// consecutive_failures its streaks (automation_streaks), both written in
// the consumer's transaction; the leader fires a window at its deadline,
// once the consumer has read the log that far, with the firing id of the
// event that opened it (docs/AUTOMATIONS.md).
//
// Files: service.go (the commands and queries the API calls),
// notifications.go (the automations of a deployment's notifications), fire.go
// (recording a firing with its jobs), consumer.go, windows.go (what events
// do to windows and streaks), timers.go (firing due windows), deliver.go
// (the job and webhooks), actions.go (Slack, email and Ordo actions),
// retry.go (retrying a delivery, a run's firings), sweep.go, rescue.go
// (deliveries left running by a server that stopped), metrics.go.
//
// It depends on domain, eventstore, riverjob (its SQL on River's jobs),
// notify and River; it must never import commands, jobs, projections or api.
package automations
