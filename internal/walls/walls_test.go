// Package walls_test checks the walls between Ordo's packages: what each
// package's doc says it must never import, and that the SQL on River's
// river_job table and on the events log stays with its owner.
package walls_test

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/ordoflow/ordo"

// root is the repository's root, two levels up from this package.
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// forbidden reads "must never import A, B or C" (up to the sentence's end)
// from a package doc and returns the import paths it names. "River's
// client" is River's module; names of Ordo's packages are under the module.
func forbidden(doc string) []string {
	doc = strings.Join(strings.Fields(doc), " ")
	i := strings.Index(doc, "must never import ")
	if i < 0 {
		return nil
	}
	list := doc[i+len("must never import "):]
	if j := strings.IndexAny(list, ".:"); j >= 0 {
		list = list[:j]
	}
	var paths []string
	for _, part := range regexp.MustCompile(`, | or `).Split(list, -1) {
		switch part = strings.TrimSpace(part); part {
		case "River's client":
			paths = append(paths, "github.com/riverqueue/river")
		case "jobs", "commands", "projections", "api", "eventstore", "riverjob", "domain":
			paths = append(paths, module+"/"+part)
		}
	}
	return paths
}

// TestPackagesImportNothingTheirDocForbids: for each package whose doc.go
// says what it must never import, none of those packages is among its
// imports (go list). A package it imports may depend on them: projections
// reads the log through eventstore, and api imports projections.
func TestPackagesImportNothingTheirDocForbids(t *testing.T) {
	dir := root(t)
	checked := 0
	for _, pkg := range []string{"commands", "jobs", "riverjob", "eventstore", "projections", "api"} {
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, pkg, "doc.go"), nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		never := forbidden(f.Doc.Text())
		if len(never) == 0 {
			t.Errorf("%s/doc.go does not say what the package must never import", pkg)
			continue
		}
		cmd := exec.Command("go", "list", "-f", `{{join .Imports " "}}`, "./"+pkg)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list ./%s: %v", pkg, err)
		}
		deps := strings.Fields(string(out))
		for _, n := range never {
			for _, d := range deps {
				if d == n {
					t.Errorf("%s imports %s, which its doc says it must never import", pkg, n)
				}
			}
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no package checked")
	}
}

// owners says which directories may write SQL on a table in Go string
// literals; pending lists files that still read the events log themselves
// while its reads move into eventstore.
var owners = []struct {
	sql     *regexp.Regexp
	dirs    []string
	pending []string
}{
	{regexp.MustCompile(`\briver_job\b`), []string{"riverjob", "internal/bench"}, nil},
	{regexp.MustCompile(`(?i)\bfrom\s+events\b`), []string{"eventstore", "internal/bench"},
		[]string{"projections/replay.go", "api/ui/live.go", "retention/retention.go"}},
}

// TestSQLOnRiverJobAndEventsStaysWithItsOwner: no string literal in a
// non-test Go file outside the owner of river_job (riverjob) or of the
// events log (eventstore) names those tables.
func TestSQLOnRiverJobAndEventsStaysWithItsOwner(t *testing.T) {
	dir := root(t)
	fset := token.NewFileSet()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		rel = filepath.ToSlash(rel)
		src, err := os.ReadFile(path)
		if err != nil || !bytes.Contains(src, []byte("`")) && !bytes.Contains(src, []byte(`"`)) {
			return err
		}
		f, err := parser.ParseFile(fset, path, src, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				return true
			}
			for _, o := range owners {
				if o.sql.MatchString(s) && !owned(rel, o.dirs, o.pending) {
					t.Errorf("%s: SQL on %q outside its owner %v", fset.Position(lit.Pos()), o.sql.FindString(s), o.dirs)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func owned(rel string, dirs, pending []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(rel, d+"/") {
			return true
		}
	}
	for _, p := range pending {
		if rel == p {
			return true
		}
	}
	return false
}
