package main

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakePython writes a python3 that lacks every library (as a bare pyenv or
// venv interpreter does) and returns its path, and a PATH that finds it
// first, for the environment of the commands a test runs.
func fakePython(t *testing.T) (fake, path string) {
	t.Helper()
	debianPython(t) // the real interpreter with the libraries must exist
	dir := t.TempDir()
	fake = filepath.Join(dir, "python3")
	script := "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'sklearn'\" >&2\nexit 1\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return fake, dir + string(os.PathListSeparator) + os.Getenv("PATH")
}

func TestDevPython(t *testing.T) {
	t.Parallel()
	fake, _ := fakePython(t)
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))

	got, err := devPython(t.Context(), "", fake, logger)
	if err != nil || got != fallbackPython {
		t.Fatalf("devPython = %q, %v; want %s, which has the libraries", got, err, fallbackPython)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), fake) || !strings.Contains(logs.String(), "python="+fallbackPython) {
		t.Errorf("no warning naming PATH's python3 %s and the one chosen:\n%s", fake, logs.String())
	}

	// ORDO_PYTHON wins, even one that lacks the libraries, with a warning
	logs.Reset()
	got, err = devPython(t.Context(), fake, fake, logger)
	if err != nil || got != fake {
		t.Fatalf("devPython(%s) = %q, %v; want it", fake, got, err)
	}
	if !strings.Contains(logs.String(), "ORDO_PYTHON lacks") || !strings.Contains(logs.String(), "No module named") {
		t.Errorf("no warning that ORDO_PYTHON lacks the libraries:\n%s", logs.String())
	}

	if _, err := devPython(t.Context(), "/nonexistent/python3", fake, logger); err == nil || !strings.Contains(err.Error(), "/nonexistent/python3") {
		t.Errorf("a missing ORDO_PYTHON: %v; want an error naming it", err)
	}

	// PATH's python3 with the libraries: chosen, no warning
	logs.Reset()
	if got, _ := devPython(t.Context(), "", fallbackPython, logger); got != fallbackPython || strings.Contains(logs.String(), "WARN") {
		t.Errorf("PATH's python3 has the libraries: got %q, logs:\n%s", got, logs.String())
	}
}

// scripts/ml-python and scripts/install-deps ml choose the interpreter as
// ordo dev does, say which, and warn about PATH's python3.
func TestMLPythonScripts(t *testing.T) {
	t.Parallel()
	fake, path := fakePython(t)
	run := func(env []string, name string, args ...string) (string, string, error) {
		cmd := exec.Command(filepath.Join("../../scripts", name), args...)
		cmd.Env = append(append(os.Environ(), "PATH="+path), env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}

	out, errOut, err := run(nil, "ml-python", "--which")
	if err != nil || strings.TrimSpace(out) != fallbackPython {
		t.Fatalf("ml-python --which: %q, %v\n%s", out, err, errOut)
	}
	if !strings.Contains(errOut, "warning: python3 on PATH ("+fake+")") {
		t.Errorf("ml-python does not warn that PATH's python3 differs:\n%s", errOut)
	}
	out, _, err = run(nil, "ml-python", "-c", "import sklearn, sys; print(sys.executable)")
	if err != nil || strings.TrimSpace(out) != fallbackPython {
		t.Errorf("ml-python does not run the script with %s: %q, %v", fallbackPython, out, err)
	}
	_, errOut, err = run([]string{"ORDO_PYTHON=" + fake}, "ml-python", "--which")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(errOut, "ORDO_PYTHON="+fake+" lacks sklearn, pandas, psycopg2") {
		t.Errorf("ORDO_PYTHON without the libraries: %v\n%s", err, errOut)
	}

	// the libraries are there, so install-deps installs nothing and says
	// which interpreter has them
	_, errOut, err = run(nil, "install-deps", "ml")
	if err != nil {
		t.Fatalf("install-deps ml: %v\n%s", err, errOut)
	}
	if !strings.Contains(errOut, "install-deps: python "+fallbackPython+" has scikit-learn, pandas and psycopg2") || !strings.Contains(errOut, fake) {
		t.Errorf("install-deps ml does not say which python it checked, nor warn about %s:\n%s", fake, errOut)
	}
}
