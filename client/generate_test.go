package client_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsCurrent generates the document and the client into a
// temporary directory, as go generate does, and compares them with the
// files in the package: a change of the API's document must come with the
// regenerated client.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	doc, code := filepath.Join(dir, "openapi.json"), filepath.Join(dir, "client.gen.go")
	for _, args := range [][]string{
		{"run", "./internal/openapidoc", "-o", doc},
		{"tool", "oapi-codegen", "-config", "oapi-codegen.yaml", "-o", code, doc},
	} {
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, out)
		}
	}
	for _, f := range []string{doc, code} {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Base(f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not what the API's document gives: run go generate ./client", filepath.Base(f))
		}
	}
}
