// Package walls_test checks the walls between Ordo's packages: what each
// package's doc says it must never import, and that the SQL on River's
// river_job table and on the events log stays with its owner.
package walls_test

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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
// from a package doc and returns the import paths it names, a trailing
// "/..." taking in the packages below. Ordo's packages are named relative to
// the module; the few others by the names the docs use.
func forbidden(doc string) []string {
	doc = strings.Join(strings.Fields(doc), " ")
	i := strings.Index(doc, "must never import ")
	if i < 0 {
		return nil
	}
	list := doc[i+len("must never import "):]
	if j := strings.IndexAny(list, ".:;"); j >= 0 {
		list = list[:j]
	}
	named := map[string]string{
		"River's client":  "github.com/riverqueue/river",
		"River":           "github.com/riverqueue/river/...",
		"pgx":             "github.com/jackc/pgx/v5/...",
		"Echo":            "github.com/labstack/echo/v4/...",
		"the domain":      module + "/domain",
		"the event store": module + "/eventstore",
		"the API":         module + "/api/...",
	}
	var paths []string
	for _, part := range regexp.MustCompile(`, | or `).Split(list, -1) {
		part = strings.TrimSpace(part)
		if p, ok := named[part]; ok {
			paths = append(paths, p)
			continue
		}
		if regexp.MustCompile(`^[a-z]+(/[a-z]+)*$`).MatchString(part) {
			paths = append(paths, module+"/"+part+"/...")
		}
	}
	return paths
}

func matches(imp, pattern string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return imp == base || strings.HasPrefix(imp, base+"/")
	}
	return imp == pattern
}

// mustSay are the packages whose doc must say what they never import: the
// layers of docs/ARCHITECTURE.md.
var mustSay = []string{
	"api", "api/ui", "client", "commands", "domain", "eventstore", "jobs", "migrations",
	"projections", "retention", "riverjob", "internal/localpg", "internal/pgtest", "internal/groupcommit",
}

// TestPackagesImportNothingTheirDocForbids: no package of the module
// imports a package its doc says it must never import (go list), and each
// layer's doc says it. A package it imports may depend on them: projections
// reads the log through eventstore, and api imports projections.
func TestPackagesImportNothingTheirDocForbids(t *testing.T) {
	dir := root(t)
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	said := map[string]bool{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p struct {
			ImportPath, Dir  string
			GoFiles, Imports []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(p.ImportPath, module+"/")
		var doc strings.Builder
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(p.Dir, name), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if f.Doc != nil {
				doc.WriteString(f.Doc.Text())
			}
		}
		never := forbidden(doc.String())
		said[rel] = len(never) > 0
		for _, n := range never {
			for _, imp := range p.Imports {
				if matches(imp, n) {
					t.Errorf("%s imports %s, which its doc says it must never import", rel, imp)
				}
			}
		}
	}
	for _, pkg := range mustSay {
		if !said[pkg] {
			t.Errorf("the doc of package %s does not say what it must never import", pkg)
		}
	}
}

// TestForbiddenReadsTheDocs: the sentence is read as the docs write it.
func TestForbiddenReadsTheDocs(t *testing.T) {
	got := forbidden("It depends on domain.\nIt must never import jobs, api/ui\nor River's client. Other text")
	want := []string{module + "/jobs/...", module + "/api/ui/...", "github.com/riverqueue/river"}
	if !slices.Equal(got, want) {
		t.Errorf("forbidden = %q, want %q", got, want)
	}
	if !matches(module+"/jobs", module+"/jobs/...") || matches(module+"/jobsx", module+"/jobs/...") {
		t.Error("a pattern with /... must match the package and those below it, nothing else")
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
	{regexp.MustCompile(`(?i)\b(from|join)\s+events\b`), []string{"eventstore", "internal/bench"}, nil},
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
