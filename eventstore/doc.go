// Package eventstore appends to and reads Ordo's event log in PostgreSQL.
//
// Appends happen inside the caller's transaction, with optimistic
// concurrency per stream, so that a command's events, the River jobs they
// imply and the job's completion commit together or not at all. Readers of
// the global log see it gap-free: an event becomes readable only once every
// transaction that could still commit an event before it has ended.
//
// The pools it configures note which database history each new connection
// reached (HistoryEpoch): after a failover that lost commits, what a
// process derived from the log before it must not be used.
//
// It depends on domain for the event types and error codes, and must never
// import projections, jobs or api.
package eventstore
