// Package projections builds Ordo's read models from the event log and
// answers queries on them: the deployments, flow_runs, task_runs,
// task_run_attempts and state_history tables, filled by one Projector that
// tails the log and applies each batch of events in one transaction together
// with its checkpoint, and rebuilt from zero by Rebuild (replay). Reader
// answers the API's queries from those tables, and rebuilds the audit trail
// and past states of a run from the log itself.
//
// It depends on domain and eventstore, and must never import jobs or api.
package projections
