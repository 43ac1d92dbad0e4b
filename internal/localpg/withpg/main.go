// Command withpg runs a command with a PostgreSQL database at hand, for the
// Makefile:
//
//	go run ./internal/localpg/withpg -- go test ./...
//
// When DATABASE_URL or ORDO_DATABASE_URL is set, it runs the command with the
// environment unchanged. Otherwise it starts a private, fast (fsync off)
// server in a fresh directory under /dev/shm (when it has room) or /tmp, runs
// the command with both variables pointing at it, then stops the server and
// removes the directory. Directories that a killed withpg left behind are
// removed first, their servers stopped.
// It forwards SIGINT and SIGTERM to the command and exits with the command's
// exit status.
//
// Like localpg, it must never import domain, eventstore, projections, jobs or
// api.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/internal/localpg"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: withpg -- COMMAND [ARGS...]")
		return 2
	}

	// Caught from the start, so that an interrupt while the server starts
	// still removes it.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)

	if os.Getenv("DATABASE_URL") != "" || os.Getenv("ORDO_DATABASE_URL") != "" {
		return runCommand(args, os.Environ(), signals)
	}

	// ORDO_PG_DURABLE=1 (benchmarks) keeps PostgreSQL's durability settings
	// and its data on disk, as in production; tests turn both off for speed.
	durable := os.Getenv("ORDO_PG_DURABLE") == "1"
	base := scratchBase()
	if durable {
		base = os.TempDir()
	}
	cleanCtx, cancelClean := context.WithTimeout(context.Background(), time.Minute)
	removed, err := removeAbandoned(cleanCtx, base)
	cancelClean()
	for _, d := range removed {
		fmt.Fprintf(os.Stderr, "withpg: removed %s, left by a withpg that was killed\n", d)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "withpg: %v (going on)\n", err)
	}
	dir, err := os.MkdirTemp(base, scratchPrefix)
	if err != nil {
		fmt.Fprintf(os.Stderr, "withpg: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := writeOwner(dir); err != nil {
		fmt.Fprintf(os.Stderr, "withpg: %v\n", err)
		return 1
	}
	// The server may run as the postgres user, which must traverse dir.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "withpg: %v\n", err)
		return 1
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-signals:
			cancel()
		case <-ctx.Done():
		}
	}()
	started := time.Now()
	srv, err := localpg.Start(ctx, localpg.Options{DataDir: filepath.Join(dir, "data"), Fast: !durable})
	interrupted := ctx.Err() != nil
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "withpg: %v\n", err)
		return 1
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := srv.Stop(stopCtx); err != nil {
			fmt.Fprintf(os.Stderr, "withpg: %v\n", err)
		}
	}()
	if interrupted {
		return 130
	}
	mode := "fsync off"
	if durable {
		mode = "durable"
	}
	fmt.Fprintf(os.Stderr, "withpg: started %s at %s (data in %s, %s, %v); stopped and removed when the command ends\n",
		serverVersion(srv.URL()), srv.URL(), dir, mode, time.Since(started).Round(time.Millisecond))

	env := append(os.Environ(), "DATABASE_URL="+srv.URL(), "ORDO_DATABASE_URL="+srv.URL())
	return runCommand(args, env, signals)
}

// runCommand runs args with env, passing stdio through and forwarding the
// signals received on signals, and returns its exit status.
func runCommand(args, env []string, signals <-chan os.Signal) int {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "withpg: %v\n", err)
		return 127
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case sig := <-signals:
				_ = cmd.Process.Signal(sig)
			case <-done:
				return
			}
		}
	}()

	err := cmd.Wait()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exitErr):
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()) // as a shell reports it
		}
		return exitErr.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "withpg: %v\n", err)
		return 1
	}
}

// scratchBase returns where the throw-away cluster goes: /dev/shm when it is
// a memory file system with room to spare, else /tmp. Both are traversable by
// every user. In memory, cloning a test database took 10 ms instead of
// 100-200 ms on this project's machines, where /tmp is on a shared disk.
func scratchBase() string {
	const minFree = 2 << 30
	var fs syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &fs); err == nil &&
		fs.Type == tmpfsMagic && fs.Bavail*uint64(fs.Bsize) >= minFree &&
		syscall.Access("/dev/shm", 0o2|0o1) == nil { // W_OK|X_OK
		return "/dev/shm"
	}
	return "/tmp"
}

// tmpfsMagic is TMPFS_MAGIC from linux/magic.h.
const tmpfsMagic = 0x01021994

// serverVersion returns "PostgreSQL 15.18", or "PostgreSQL" when the server
// cannot be asked.
func serverVersion(url string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "PostgreSQL"
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
		return "PostgreSQL"
	}
	return "PostgreSQL " + v
}
