// Package pythonsdk carries Ordo's Python package (sdk/python/ordo) inside
// the binary, so that a worker and `ordo deploy` use the package of their
// own version without an install step: Extract writes it to a directory
// that goes on the tasks' PYTHONPATH.
//
// It must never import the domain, the event store or the API: it is files.
package pythonsdk

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
)

//go:embed ordo/*.py
var files embed.FS

// Version is the package's version (ordo/_version.py), which is also the
// binary's.
var Version = func() string {
	b, err := files.ReadFile("ordo/_version.py")
	if err != nil {
		panic(err)
	}
	m := regexp.MustCompile(`__version__ = "([^"]+)"`).FindSubmatch(b)
	if m == nil {
		panic("ordo/_version.py has no __version__")
	}
	return string(m[1])
}()

// digest is a hash of every embedded file, naming the extracted copy.
var digest = sync.OnceValue(func() string {
	h := sha256.New()
	var names []string
	_ = fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, p)
		}
		return err
	})
	sort.Strings(names)
	for _, n := range names {
		b, _ := files.ReadFile(n)
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
})

// Extract writes the package under dir (once per content: dir/<version>-<digest>)
// and returns the directory to put on PYTHONPATH, which holds ordo/. A copy
// already there is reused; a new one is written aside and renamed into
// place, so concurrent extractions by several processes are safe.
func Extract(dir string) (string, error) {
	final := filepath.Join(dir, Version+"-"+digest())
	if _, err := os.Stat(filepath.Join(final, "ordo", "__init__.py")); err == nil {
		return final, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("python package: %w", err)
	}
	tmp, err := os.MkdirTemp(dir, ".extract-")
	if err != nil {
		return "", fmt.Errorf("python package: %w", err)
	}
	defer os.RemoveAll(tmp)
	err = fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(tmp, p), 0o755)
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(tmp, p), b, 0o644)
	})
	if err != nil {
		return "", fmt.Errorf("python package: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		// another process put its copy there first
		if _, statErr := os.Stat(filepath.Join(final, "ordo", "__init__.py")); statErr == nil {
			return final, nil
		}
		return "", fmt.Errorf("python package: %w", err)
	}
	return final, nil
}

// DefaultDir is where a process without a better place (a worker's
// workspace) extracts the package: the user's cache directory, else the
// temporary directory.
func DefaultDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "ordo", "python")
	}
	return filepath.Join(os.TempDir(), "ordo-python")
}

// WithPythonPath returns env (KEY=VALUE entries) with dir last on
// PYTHONPATH: entries already there keep their precedence, so a task or a
// user that names its own copy of the package gets it.
func WithPythonPath(env []string, dir string) []string {
	out := make([]string, 0, len(env)+1)
	value := dir
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PYTHONPATH="); ok {
			if v != "" {
				value = v + string(os.PathListSeparator) + dir
			}
			continue
		}
		out = append(out, kv)
	}
	return append(out, "PYTHONPATH="+value)
}
