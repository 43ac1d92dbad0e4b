// Package chaos holds Ordo's chaos tests: the real ordo binary, run as
// separate `ordo server` and `ordo worker` processes on a real PostgreSQL,
// while the tests SIGKILL workers, restart the database, SIGKILL the server
// in the middle of projecting and scheduling, and run two servers at once.
// Afterwards each test reads the event log and checks what a user would
// notice: every run ended, no task completion lost or recorded twice, no
// schedule tick lost or doubled, no task run executed twice at the same
// time, no automation firing lost, recorded twice or delivered under
// another key, the read models equal a fresh replay and every event is a
// legal transition. Each test logs what it did and what it checked (go test -v).
//
// The package has no code besides its tests, and nothing imports it.
// docs/RELIABILITY.md describes the tests and how to run them longer.
package chaos
