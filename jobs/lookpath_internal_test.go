package jobs

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// A bare command name is resolved on PATH once for a burst of tasks, with
// argv[0] as the task gave it, and a program installed earlier on PATH or
// removed is seen once the cached lookup is older than lookPathTTL.
func TestCommandLookupIsCachedBriefly(t *testing.T) {
	first, second := t.TempDir(), t.TempDir()
	t.Setenv("PATH", first+string(os.PathListSeparator)+second)
	const name = "ordo-lookpath-test"
	install := func(dir string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	age := func() { // as if lookPathTTL had passed
		commandPaths.mu.Lock()
		r := commandPaths.m[name]
		r.at = r.at.Add(-2 * lookPathTTL)
		commandPaths.m[name] = r
		commandPaths.mu.Unlock()
	}

	if cmd := command(name); cmd.Err == nil {
		t.Fatalf("a name on no PATH entry resolved to %s", cmd.Path)
	}
	inSecond := install(second)
	cmd := command(name, "a", "b")
	if cmd.Err != nil || cmd.Path != inSecond || len(cmd.Args) != 3 || cmd.Args[0] != name || cmd.Args[2] != "b" {
		t.Fatalf("resolved to %q with args %q (%v), want %s with argv[0] %s", cmd.Path, cmd.Args, cmd.Err, inSecond, name)
	}
	inFirst := install(first)
	if cmd := command(name); cmd.Path != inSecond {
		t.Errorf("within the TTL the lookup is cached: got %s", cmd.Path)
	}
	age()
	if cmd := command(name); cmd.Path != inFirst {
		t.Errorf("after the TTL a program installed earlier on PATH is used: got %s, want %s", cmd.Path, inFirst)
	}
	if err := os.Remove(inFirst); err != nil {
		t.Fatal(err)
	}
	age()
	if cmd := command(name); cmd.Path != inSecond {
		t.Errorf("after the TTL a removed program is no longer used: got %s, want %s", cmd.Path, inSecond)
	}
	if cmd := command("./" + name); cmd.Path != "./"+name {
		t.Errorf("a name with a slash is used as given: got %s", cmd.Path)
	}
}

// The lookup's cost, cached and not: go test -run X -bench CommandLookup ./jobs
func BenchmarkCommandLookup(b *testing.B) {
	b.Run("exec.Command", func(b *testing.B) {
		for b.Loop() {
			_ = exec.Command("true")
		}
	})
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			_ = command("true")
		}
	})
}
