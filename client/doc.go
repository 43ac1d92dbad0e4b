// Package client is a typed Go client of Ordo's HTTP API, generated with
// oapi-codegen from the API's OpenAPI document (openapi.json, the document
// the server serves at /api/v1/openapi.json). Each operation of the document
// is a method named for its operationId (RunCreate, RunGet, RunLogs, ...);
// ClientWithResponses decodes the answers into the document's types.
//
// The generated files are written by go generate and must never be edited;
// TestGeneratedCodeIsCurrent fails when they differ from what the document
// gives. It depends on nothing of Ordo's server, so that code that talks to
// Ordo imports it without pulling in the database or job queue: it must
// never import domain, eventstore, commands, jobs, projections or api.
package client

//go:generate go run ./internal/openapidoc -o openapi.json
//go:generate go tool oapi-codegen -config oapi-codegen.yaml -o client.gen.go openapi.json
