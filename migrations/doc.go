// Package migrations holds Ordo's database schema as golang-migrate SQL files
// embedded in the binary, and installs River's own tables with rivermigrate,
// so that one call brings a database to the version this binary expects.
//
// It must never import the domain, the event store or the API: the schema is
// the lowest layer.
package migrations
