//go:build !linux

package jobs

import "syscall"

// taskProcAttr puts a command task in its own process group, so that a
// timeout or a cancellation kills everything it started. Outside Linux a
// task outlives a worker killed by SIGKILL.
func taskProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
