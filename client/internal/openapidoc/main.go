// Command openapidoc writes the API's OpenAPI document (api.OpenAPIJSON) to
// a file, for go generate in package client.
package main

import (
	"flag"
	"log"
	"os"

	"github.com/ordoflow/ordo/api"
)

func main() {
	out := flag.String("o", "openapi.json", "the file to write")
	flag.Parse()
	doc, err := api.OpenAPIJSON()
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, doc, 0o644); err != nil {
		log.Fatal(err)
	}
}
