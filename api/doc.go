// Package api is Ordo's HTTP API: JSON over HTTP under /api/v1, served by
// Echo, with its OpenAPI document, health and readiness probes and
// Prometheus metrics.
//
// Handlers read the request, validate it with domain, call one method of a
// service the package declares as an interface (deployment and run commands
// on the write side, the read models on the read side), and map the result.
// Errors go through one handler and one table from domain.Code to status.
//
// Task logs are served as pages or, with follow=true, as Server-Sent
// Events until the run ends. The outputs of task runs are listed from the
// read models and their bytes served from the blob store (outputs.go),
// with ETag, ranges and headers that keep a task's file from running
// script in the UI's origin. With a River client in its options it also
// serves River's own UI under /riverui/ and pauses and resumes work queues
// through River.
//
// With an Auth in its options, every request but the health probes needs
// an API token as soon as one exists (auth.go): read for GETs, run to
// start, cancel and retry runs, admin for the rest; the token's name is
// the actor of the events a request causes. ProtectUI puts the web UI's
// data routes behind the same check.
//
// It depends on domain, on projections' result types and on River's client
// and UI; it must never import jobs or eventstore: cmd/ordo wires the
// implementations in.
package api
