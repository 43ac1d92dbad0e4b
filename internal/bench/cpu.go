package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// cpuTime is the CPU time this process and its waited-for children have
// used: the worker's side of a task, the task's process included, and not
// PostgreSQL's.
func cpuTime() time.Duration {
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(children.Utime) + tv(children.Stime)
}

// serverCPU reads the CPU time of the PostgreSQL server a pool talks to,
// when that server runs on this machine where /proc shows it (the private
// server of `ordo bench` does): the postmaster's own, that of the children
// it has reaped (backends that ended) and that of its live children.
type serverCPU struct{ postmaster int }

// newServerCPU returns nil when the server's processes are not visible.
func newServerCPU(ctx context.Context, pool *pgxpool.Pool) *serverCPU {
	var backend int
	if err := pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		return nil
	}
	comm, f := procStat(backend)
	if comm != "postgres" || len(f) < 2 {
		return nil
	}
	pm, err := strconv.Atoi(f[1])
	if err != nil {
		return nil
	}
	return &serverCPU{postmaster: pm}
}

// used is the server's CPU time so far.
func (m *serverCPU) used() time.Duration {
	if m == nil {
		return 0
	}
	entries, _ := os.ReadDir("/proc")
	var ticks int64
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		_, f := procStat(pid)
		// f[1] is the parent; f[11] to f[14] utime, stime, cutime, cstime
		if len(f) < 15 {
			continue
		}
		switch {
		case pid == m.postmaster:
			for _, v := range f[11:15] {
				n, _ := strconv.ParseInt(v, 10, 64)
				ticks += n
			}
		case f[1] == strconv.Itoa(m.postmaster):
			for _, v := range f[11:13] {
				n, _ := strconv.ParseInt(v, 10, 64)
				ticks += n
			}
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on Linux.
const clockTicks = 100

// procStat returns a process's command name and the fields of
// /proc/PID/stat after it (state first).
func procStat(pid int) (string, []string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", nil
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open || end+2 > len(s) {
		return "", nil
	}
	return s[open+1 : end], strings.Fields(s[end+2:])
}
