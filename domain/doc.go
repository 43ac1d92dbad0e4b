// Package domain is the heart of Ordo: flow and deployment specs and their
// validation, schedules, the state model of flow runs and task runs, the
// events that record every state change, and the pure decisions that turn a
// command into events.
//
// Everything here is pure Go: it must never import pgx, River, Echo or any
// other package that touches a database, the network or the clock. Time is
// always passed in.
package domain
