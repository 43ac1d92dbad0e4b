package pythonsdk_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	pythonsdk "github.com/ordoflow/ordo/sdk/python"
)

// interpreters are the Pythons the package must work on: Debian's, which
// has the data libraries, and the first python3 on PATH when it is another.
func interpreters(t *testing.T) []string {
	t.Helper()
	var out []string
	seen := map[string]bool{}
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		path, err := exec.LookPath(p)
		if err != nil {
			continue
		}
		real, err := filepath.EvalSymlinks(path)
		if err != nil {
			real = path
		}
		if !seen[real] {
			seen[real] = true
			out = append(out, path)
		}
	}
	if len(out) == 0 {
		t.Skip("no python3")
	}
	return out
}

func pythonEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ORDO_") && !strings.HasPrefix(kv, "PYTHONPATH=") {
			env = append(env, kv)
		}
	}
	return append(append(env, "PYTHONDONTWRITEBYTECODE=1"), extra...)
}

func TestUnittestSuitePasses(t *testing.T) {
	t.Parallel()
	for _, py := range interpreters(t) {
		t.Run(py, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(py, "-m", "unittest", "discover", "-s", "tests")
			cmd.Env = pythonEnv()
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s -m unittest: %v\n%s", py, err, out)
			}
		})
	}
}

func TestPipInstallsWithoutIndex(t *testing.T) {
	t.Parallel()
	for _, py := range interpreters(t) {
		t.Run(py, func(t *testing.T) {
			t.Parallel()
			if exec.Command(py, "-m", "pip", "--version").Run() != nil {
				t.Skipf("%s has no pip", py)
			}
			target := t.TempDir()
			cmd := exec.Command(py, "-m", "pip", "install", "--no-index", "--no-cache-dir", "--disable-pip-version-check", "--target", target, ".")
			cmd.Env = pythonEnv()
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("pip install: %v\n%s", err, out)
			}
			checkVersion(t, py, target)
		})
	}
}

func TestExtractedPackageImports(t *testing.T) {
	t.Parallel()
	dir, err := pythonsdk.Extract(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, py := range interpreters(t) {
		checkVersion(t, py, dir)
	}
}

// checkVersion imports ordo from dir (outside the source tree) and compares
// its version with the binary's.
func checkVersion(t *testing.T, py, dir string) {
	t.Helper()
	cmd := exec.Command(py, "-c", "import ordo, sys; sys.stdout.write(ordo.__version__ + ' ' + ordo.__file__)")
	cmd.Dir = t.TempDir()
	cmd.Env = pythonEnv("PYTHONPATH=" + dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: import ordo from %s: %v", py, dir, err)
	}
	version, file, _ := strings.Cut(string(out), " ")
	if version != pythonsdk.Version {
		t.Errorf("%s: ordo.__version__ = %q, want %q", py, version, pythonsdk.Version)
	}
	if !strings.HasPrefix(file, dir) {
		t.Errorf("%s: imported ordo from %s, want it under %s", py, file, dir)
	}
}
