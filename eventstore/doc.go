// Package eventstore appends to and reads Ordo's event log in PostgreSQL.
//
// Appends happen inside the caller's transaction, with optimistic
// concurrency per stream, so that a command's events, the River jobs they
// imply and the job's completion commit together or not at all. Readers of
// the global log see it gap-free: an event becomes readable only once every
// transaction that could still commit an event before it has ended.
//
// It depends on domain for the event types and error codes, and must never
// import projections, jobs or api.
package eventstore
