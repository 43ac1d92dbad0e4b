package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ordoflow/ordo/internal/pgtest"
)

// serverURL is the base URL of the `ordo server` TestMain starts for the
// examples, with an `ordo worker` on the queue "example".
var serverURL string

func TestMain(m *testing.M) {
	stop, err := startOrdo()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start ordo:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop ordo:", err)
		code = 1
	}
	os.Exit(code)
}

// startOrdo builds the ordo binary and starts a server and a worker on a
// database of their own, as a user would.
func startOrdo() (stop func() error, err error) {
	dir, err := os.MkdirTemp("", "ordo-client-example-")
	if err != nil {
		return nil, err
	}
	var procs []*exec.Cmd
	dbURL, drop, err := pgtest.MainURL(context.Background())
	stop = func() error {
		for _, p := range procs {
			_ = p.Process.Signal(os.Interrupt)
			_ = p.Wait()
		}
		var errs []error
		if drop != nil {
			errs = append(errs, drop())
		}
		return errors.Join(append(errs, os.RemoveAll(dir))...)
	}
	if err != nil {
		return nil, errors.Join(err, stop())
	}
	bin := filepath.Join(dir, "ordo")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/ordo").CombinedOutput(); err != nil {
		return nil, errors.Join(fmt.Errorf("go build: %w\n%s", err, out), stop())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, errors.Join(err, stop())
	}
	addr := ln.Addr().String()
	ln.Close()
	log, err := os.Create(filepath.Join(dir, "ordo.log"))
	if err != nil {
		return nil, errors.Join(err, stop())
	}
	for _, args := range [][]string{
		{"server", "--addr", addr},
		{"worker", "-q", "example", "--workspace-dir", filepath.Join(dir, "ws")},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "ORDO_DATABASE_URL="+dbURL)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			return nil, errors.Join(err, stop())
		}
		procs = append(procs, cmd)
	}
	serverURL = "http://" + addr
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(serverURL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return stop, nil
			}
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(log.Name())
			return nil, errors.Join(fmt.Errorf("the server was not ready within 30 s:\n%s", out), stop())
		}
	}
}
