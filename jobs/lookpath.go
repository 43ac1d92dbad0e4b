package jobs

import (
	"os/exec"
	"strings"
	"sync"
	"time"
)

// lookPathTTL is how long a resolved command name is trusted: long enough
// for a burst of tasks to share one lookup, short enough that a program
// installed or removed is seen by the next tasks.
const lookPathTTL = time.Second

// commandPaths caches exec.LookPath for bare command names (`python3`):
// resolving one is a stat per PATH entry, a tenth of the worker's CPU to
// start a quick command.
var commandPaths struct {
	mu sync.Mutex
	m  map[string]resolvedPath
}

type resolvedPath struct {
	path string
	at   time.Time
}

// command is exec.Command with the lookup of a bare name cached; argv[0]
// stays the name as the task gave it. A name that does not resolve is not
// cached: exec.Command reports why when the command starts.
func command(name string, args ...string) *exec.Cmd {
	if name == "" || strings.ContainsRune(name, '/') {
		return exec.Command(name, args...)
	}
	now := time.Now()
	commandPaths.mu.Lock()
	r, ok := commandPaths.m[name]
	commandPaths.mu.Unlock()
	if ok && now.Sub(r.at) < lookPathTTL {
		return &exec.Cmd{Path: r.path, Args: append([]string{name}, args...)}
	}
	cmd := exec.Command(name, args...)
	if cmd.Err == nil {
		commandPaths.mu.Lock()
		if commandPaths.m == nil || len(commandPaths.m) >= 1000 {
			commandPaths.m = map[string]resolvedPath{} // forget names no longer used
		}
		commandPaths.m[name] = resolvedPath{path: cmd.Path, at: now}
		commandPaths.mu.Unlock()
	}
	return cmd
}
