// Command ordo is Ordo's one binary: the server, the worker, local
// development, migrations and the client commands.
//
// It wires the packages together and holds no logic of its own beyond
// flags, configuration and output.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/ordoflow/ordo/domain"
)

// gcPercent is the garbage collector's target when GOGC is not set. A
// worker or a server allocates briskly but keeps a small heap: letting the
// heap grow by four times the live data between collections instead of
// once trades some memory for CPU, which on a small machine PostgreSQL
// gets back (docs/BENCHMARKS.md has the figures).
const gcPercent = 400

func main() {
	configureGC()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "ordo:", err)
		os.Exit(exitCode(err))
	}
}

// configureGC sets the collector's target to gcPercent unless GOGC says
// otherwise.
func configureGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

// exitCode maps an error to the process exit status: 2 for bad input, 1 for
// everything else. Commands that report an outcome (a run that failed) set
// their own status with exitError.
func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if domain.ErrorCode(err) == domain.CodeInvalid {
		return 2
	}
	return 1
}

type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }
