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
// Events until the run ends. With a River client in its options it also
// serves River's own UI under /riverui/ and pauses and resumes work queues
// through River.
//
// It depends on domain, on projections' result types and on River's client
// and UI; it must never import jobs or eventstore: cmd/ordo wires the
// implementations in.
package api
