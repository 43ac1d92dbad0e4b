package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ordoflow/ordo/internal/localpg"
)

// The dev database's port, taken by another program: a port the user
// chose is an error that says so; the default or remembered one gives way
// to a free port, with a warning, and that port is remembered.
func TestDevPostgresPortTaken(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "ordo-dev-port-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // reachable by the postgres user
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))

	_, err = startDevPostgres(t.Context(), dir, port, true, logger)
	if !errors.Is(err, localpg.ErrPortInUse) || !strings.Contains(err.Error(), strconv.Itoa(port)) {
		t.Fatalf("a chosen port that is taken: %v; want ErrPortInUse naming %d", err, port)
	}

	pg, err := startDevPostgres(t.Context(), dir, port, false, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Stop(context.Background()) })
	if pg.Port() == port {
		t.Fatalf("started on the taken port %d", port)
	}
	if !strings.Contains(logs.String(), "port is taken") || !strings.Contains(logs.String(), "port="+strconv.Itoa(port)) {
		t.Errorf("no warning naming the taken port:\n%s", logs.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, devPortFile))
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(pg.Port()) {
		t.Errorf("remembered port %q (%v); want %d", b, err, pg.Port())
	}
	if url, err := devDatabaseURL(dir); err != nil || url != pg.URL() {
		t.Errorf("devDatabaseURL = %q, %v; want %s", url, err, pg.URL())
	}
}
