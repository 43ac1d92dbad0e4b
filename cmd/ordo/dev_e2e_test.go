package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// devEnv is the environment of a user who configured no database: the
// commands must find the dev database by themselves.
func devEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "DATABASE_URL", "ORDO_DATABASE_URL", "ORDO_DATA_DIR", "ORDO_ADDR", "ORDO_DB_PORT", "PGHOST", "PGPORT":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// runIn runs the ordo binary in dir and returns its stdout, stderr and exit
// code.
func runIn(t *testing.T, dir string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(ordoBinary(t), args...)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	t.Fatalf("ordo %v: %v", args, err)
	return "", "", -1
}

// startDev starts `ordo dev` in dir (its data in dir/.ordo) and returns
// once the API is ready.
func startDev(t *testing.T, dir string, args ...string) (*exec.Cmd, *os.File) {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(ordoBinary(t), append([]string{"dev", "--addr", addr}, args...)...)
	cmd.Dir, cmd.Env = dir, devEnv()
	logFile, err := os.CreateTemp(t.TempDir(), "dev-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			// SIGTERM, so that a failed test leaves no PostgreSQL running
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(2 * time.Minute):
				_ = cmd.Process.Kill()
				<-done
			}
		}
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("--- ordo dev output:\n%s", tail(string(b), 4000))
		}
	})
	// first start: initdb and migrations, on a machine that may be busy
	deadline := time.Now().Add(3 * time.Minute)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cmd, logFile
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ordo dev not ready at %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopDev sends sig to ordo dev and checks that it exits 0 and that the
// PostgreSQL of its data dir is stopped: no postmaster.pid, port closed.
func stopDev(t *testing.T, cmd *exec.Cmd, sig os.Signal, dataDir string, port string) {
	t.Helper()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ordo dev after %v: %v", sig, err)
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("ordo dev did not exit after %v", sig)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "postgres", "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after %v, the dev PostgreSQL still runs: postmaster.pid: %v", sig, err)
	}
	if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
		c.Close()
		t.Errorf("after %v, something still listens on the dev database's port %s", sig, port)
	}
}

// The dev setup as a user meets it: `ordo dev` on a stable port that
// `ordo dev url` prints and the database commands find by themselves;
// SIGTERM or Ctrl-C stops it all, PostgreSQL included; the next start
// comes back on the same port.
func TestEndToEndDevSetup(t *testing.T) {
	t.Parallel()
	// PostgreSQL runs as the postgres user when the tests run as root: it
	// must be able to reach the data dir
	dir, err := os.MkdirTemp("", "ordo-dev-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, ".ordo")
	_, port, _ := net.SplitHostPort(freeAddr(t))
	wantURL := fmt.Sprintf("postgres://postgres@127.0.0.1:%s/postgres?sslmode=disable", port)

	dev, _ := startDev(t, dir, "--db-port", port)
	out, errOut, code := runIn(t, dir, devEnv(), "dev", "url")
	if code != 0 || strings.TrimSpace(out) != wantURL {
		t.Fatalf("ordo dev url: exit %d, %q %s; want %s", code, out, errOut, wantURL)
	}
	// a command that opens the database finds the dev one: from the
	// directory of .ordo, and from elsewhere with ORDO_DATA_DIR
	out, errOut, code = runIn(t, dir, devEnv(), "migrate", "version")
	if code != 0 || !strings.Contains(out+errOut, "ordo") {
		t.Fatalf("ordo migrate version with no database configured: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runIn(t, t.TempDir(), append(devEnv(), "ORDO_DATA_DIR="+dataDir), "tokens", "ls")
	if code != 0 {
		t.Fatalf("ordo tokens ls with ORDO_DATA_DIR: exit %d\n%s%s", code, out, errOut)
	}

	stopDev(t, dev, syscall.SIGTERM, dataDir, port)

	// nothing runs: both say so, and what to do
	_, errOut, code = runIn(t, dir, devEnv(), "dev", "url")
	if code == 0 || !strings.Contains(errOut, "no dev database is running in "+dataDir) || !strings.Contains(errOut, "make dev") {
		t.Errorf("ordo dev url with the dev setup stopped: exit %d, %s", code, errOut)
	}
	_, errOut, code = runIn(t, dir, devEnv(), "replay", "--dry-run")
	if code == 0 || !strings.Contains(errOut, "ORDO_DATABASE_URL") || !strings.Contains(errOut, "make dev") {
		t.Errorf("ordo replay with no database: exit %d, %s", code, errOut)
	}

	// the port is remembered: no --db-port this time; Ctrl-C stops it too
	dev, _ = startDev(t, dir)
	out, _, _ = runIn(t, dir, devEnv(), "dev", "url")
	if strings.TrimSpace(out) != wantURL {
		t.Errorf("after a restart, ordo dev url = %q; want the same %s", out, wantURL)
	}
	stopDev(t, dev, os.Interrupt, dataDir, port)
}
