// Package bench holds Ordo's benchmark scenarios: task throughput next to
// raw River, step latency, command-task workloads, event appends next to
// pgbench, replay next to a plain scan, the runs API under concurrent
// clients, schedule lateness, the memory of a server and a worker, and
// throughput as the log grows, and the blob store's backends next to a
// plain COPY and bare S3 calls. Each scenario measures its baseline in the
// same run, on the same PostgreSQL, and returns rows of a report that
// `ordo bench` prints as a table, Markdown, JSON and an SVG chart; the Go
// benchmarks of the other packages run the same scenarios through
// internal/bench/benchtest.
//
// Every measure runs on a database of its own, which the caller provides
// (Env.NewDatabase). Scenarios that need what only the ordo binary has (its
// HTTP server, its processes) take it as an option from cmd/ordo.
//
// It may import domain, eventstore, projections, jobs and migrations, and
// must never be imported by them: it is a consumer of Ordo, like cmd/ordo.
package bench
