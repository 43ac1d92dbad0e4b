package jobs

import "syscall"

// taskProcAttr puts a command task in its own process group, so that a
// timeout or a cancellation kills everything it started, and asks the
// kernel to SIGKILL it when the worker dies (even by SIGKILL). The death
// signal reaches only the task's own process, not what it started in turn:
// after a worker is killed, a task's grandchildren keep running until they
// end by themselves. (Strictly, Linux sends the signal when the thread that
// started the task exits; Go keeps its threads for the life of the process
// unless a goroutine locked to one exits.)
func taskProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
