package jobs

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	pythonsdk "github.com/ordoflow/ordo/sdk/python"
)

// Past its limit the pool stops the interpreter used least recently, and
// closing it stops the rest.
func TestWarmPoolStopsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	python, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		if python, err = exec.LookPath("python3"); err != nil {
			t.Skip("no python3")
		}
	}
	sdk, err := pythonsdk.Extract(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "PYTHONPATH=" + sdk}
	dir := t.TempDir()
	p := newWarmPool(slog.New(slog.DiscardHandler))
	p.max = 2
	get := func(name string) *zygote {
		t.Helper()
		file := filepath.Join(dir, name+".py")
		if err := os.WriteFile(file, []byte("x = 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		z := p.get(file, python, file, dir, env)
		<-z.ready
		if z.err != nil {
			t.Fatalf("interpreter of %s: %v", name, z.err)
		}
		return z
	}
	stopped := func(z *zygote) bool {
		select {
		case <-z.done:
			return true
		case <-time.After(10 * time.Second):
			return false
		}
	}
	a, b := get("a"), get("b")
	if get("a") != a {
		t.Fatal("a second attempt of a got another interpreter")
	}
	c := get("c") // b is the least recently used
	if !stopped(b) {
		t.Error("b, least recently used, still runs after c started")
	}
	select {
	case <-a.done:
		t.Error("a, used after b, was stopped")
	default:
	}
	p.close()
	if !stopped(a) || !stopped(c) {
		t.Error("closing the pool left interpreters running")
	}
	if p.get("d", python, "d.py", dir, env) != nil {
		t.Error("a closed pool started an interpreter")
	}
}
