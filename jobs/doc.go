// Package jobs runs flow runs on River: it creates runs (the write side of
// flow runs), works task runs on workers that take only their own work
// queues (work queues are River queues), advances the DAG as tasks finish,
// and makes scheduled jobs due on time.
//
// Every state change goes through the domain's decisions and is appended to
// the event log in the same transaction as the River jobs it implies and the
// completion of the River job that caused it.
//
// It depends on domain and eventstore; it must never import projections or
// api.
package jobs
