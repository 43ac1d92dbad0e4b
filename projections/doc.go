// Package projections builds Ordo's read models from the event log and
// answers queries on them: the deployments, flow_runs, task_runs,
// task_run_attempts and state_history tables, filled by one Projector that
// tails the log and applies each batch of events in one transaction together
// with its checkpoint. Replay rebuilds them all from the start of the log
// into fresh tables while the live ones keep serving, and swaps them in
// atomically; Verify compares a rebuild with the live tables and checks the
// whole log with the domain's validator. Reader answers the API's queries
// from those tables (runs, deployments, work queues, task logs, the outputs
// of task runs, a deployment's metric series), and rebuilds the audit trail
// and past states of a run from the log itself. A flow run's metrics are
// the union of its task runs': the projector derives them in SQL, Replay
// and a run's history in Go, by the same rule. The projector also feeds the
// read side's Prometheus metrics.
//
// It depends on domain and eventstore, and must never import jobs or api.
package projections
