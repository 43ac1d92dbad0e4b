package eventstore_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// logSQL matches SQL that names the events table.
var logSQL = regexp.MustCompile(`\b(FROM|JOIN|INTO|UPDATE|TABLE|TRUNCATE)\s+events\b`)

// notYetBehindTheStore are files outside eventstore that still write SQL on
// the log: the write side's, which move behind the store with the write
// side's own package. Remove each entry once its file is clean.
var notYetBehindTheStore = []string{
	"jobs/cancel.go",
	"jobs/deployruns.go",
	"jobs/scheduler.go",
}

func TestOnlyTheStoreWritesSQLOnTheLog(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..")
	var offenders []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			// the store itself, and the benchmarks, which measure the
			// table directly
			if rel == "eventstore" || rel == "internal/bench" || strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if logSQL.Match(src) {
			offenders = append(offenders, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range offenders {
		if !slices.Contains(notYetBehindTheStore, f) {
			t.Errorf("%s writes SQL on the events table: read or write the log through eventstore's functions", f)
		}
	}
	for _, f := range notYetBehindTheStore {
		if !slices.Contains(offenders, f) {
			t.Errorf("%s no longer writes SQL on the events table: remove it from notYetBehindTheStore", f)
		}
	}
}
