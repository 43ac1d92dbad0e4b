package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ordoflow/ordo/internal/localpg"
)

// deadPID returns the pid of a process that has ended.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// scratchDir makes a scratch directory in base owned by pid, started at
// start; no owner file when pid is 0.
func scratchDir(t *testing.T, base, name string, pid int, start string) string {
	t.Helper()
	dir := filepath.Join(base, scratchPrefix+name)
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if pid != 0 {
		if err := os.WriteFile(filepath.Join(dir, ownerFile), fmt.Appendf(nil, "%d %s\n", pid, start), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestRemoveAbandonedRemovesOnlyWhatAKilledWithpgLeft(t *testing.T) {
	base := t.TempDir()
	myStart, ok := processStart(os.Getpid())
	if !ok {
		t.Skip("no /proc to tell a process's start time")
	}
	dead := scratchDir(t, base, "dead", deadPID(t), "")
	reused := scratchDir(t, base, "reused", os.Getpid(), myStart+"0") // this pid, another start: reused
	live := scratchDir(t, base, "live", os.Getpid(), myStart)
	unowned := scratchDir(t, base, "unowned", 0, "")
	other := filepath.Join(base, "not-ours")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}

	removed, err := removeAbandoned(t.Context(), base)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if want := []string{dead, reused}; !slices.Equal(removed, want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	for _, d := range []string{dead, reused} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", d, err)
		}
	}
	for _, d := range []string{live, unowned, other} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s was removed: %v", d, err)
		}
	}
}

func TestRemoveAbandonedStopsTheServerFirst(t *testing.T) {
	if _, err := localpg.Binaries(t.Context(), ""); err != nil {
		t.Skipf("no PostgreSQL binaries: %v", err)
	}
	// The server may run as the postgres user, which must traverse base.
	base, err := os.MkdirTemp("", "withpg-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := scratchDir(t, base, "killed", deadPID(t), "")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.Remove(data); err != nil {
		t.Fatal(err)
	}
	srv, err := localpg.Start(t.Context(), localpg.Options{DataDir: data, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	pidFile, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	postmaster, err := strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // when its directory went without it
		if running(postmaster) {
			_ = syscall.Kill(postmaster, syscall.SIGQUIT)
		}
	})

	removed, err := removeAbandoned(t.Context(), base)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{dir}) {
		t.Fatalf("removed %v, want %v", removed, []string{dir})
	}
	// Its files are gone either way: the process tells whether it was
	// stopped. pg_ctl returns once the pid file is gone, a moment before
	// the process itself, whose parent (init) reaps it in its own time.
	deadline := time.Now().Add(10 * time.Second)
	for running(postmaster) {
		if time.Now().After(deadline) {
			t.Fatalf("the server of the removed directory (pid %d) still runs", postmaster)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("%s is still there (%v)", dir, err)
	}
}

// running reports whether process pid exists and has not exited (a zombie
// has).
func running(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	fields, ok := procStat(pid)
	return !ok || len(fields) == 0 || fields[0] != "Z"
}
