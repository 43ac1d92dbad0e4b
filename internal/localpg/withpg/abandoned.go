package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/ordoflow/ordo/internal/localpg"
)

// scratchPrefix begins the name of every scratch directory withpg makes.
const scratchPrefix = "ordo-pg-"

// ownerFile, in a scratch directory, names the withpg that made it: its pid
// and its start time (a reused pid has another).
const ownerFile = "withpg.owner"

// writeOwner records this process as the owner of dir.
func writeOwner(dir string) error {
	pid := os.Getpid()
	start, _ := processStart(pid)
	return os.WriteFile(filepath.Join(dir, ownerFile), fmt.Appendf(nil, "%d %s\n", pid, start), 0o644)
}

// removeAbandoned stops the servers of, and removes, the scratch directories
// in base whose withpg no longer runs: one killed with SIGKILL cannot stop
// its server or remove its directory, and under /dev/shm that is memory held
// until the machine restarts. A directory without an owner file (made by an
// older withpg, or by one that has not written it yet) is left alone. A
// command the killed withpg ran may outlive it (nothing kills it) and loses
// its database here: its results were no one's to read. It returns the
// directories removed and the first error met.
func removeAbandoned(ctx context.Context, base string) ([]string, error) {
	dirs, err := filepath.Glob(filepath.Join(base, scratchPrefix+"*"))
	if err != nil {
		return nil, err
	}
	var removed []string
	var firstErr error
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pidText, start, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || ownerAlive(pid, start) {
			continue
		}
		// The server first: removing the files of a running server would
		// leave it running on nothing.
		if err := localpg.StopIn(ctx, filepath.Join(dir, "data")); err != nil {
			firstErr = cmp.Or(firstErr, fmt.Errorf("stop the server left in %s: %w", dir, err))
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		removed = append(removed, dir)
	}
	return removed, firstErr
}

// ownerAlive reports whether the process pid, started at start (empty when
// unknown), still runs.
func ownerAlive(pid int, start string) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	if now, ok := processStart(pid); ok && start != "" && now != start {
		return false // the pid was reused by another process
	}
	return true
}

// processStart returns when process pid started, in clock ticks since boot
// (the 22nd field of /proc/PID/stat), or false where /proc cannot tell.
func processStart(pid int) (string, bool) {
	const startField = 22
	fields, ok := procStat(pid)
	if !ok || len(fields) < startField-2 {
		return "", false
	}
	return fields[startField-3], true
}

// procStat returns the fields of /proc/PID/stat from the third (the
// process's state) on, or false where /proc cannot tell.
func procStat(pid int) ([]string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, false
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, false
	}
	return strings.Fields(string(b[i+1:])), true
}
