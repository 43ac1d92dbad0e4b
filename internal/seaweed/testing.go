package seaweed

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"
)

// TestBucket is the bucket Shared creates; tests share it, each under a
// prefix of its own.
const TestBucket = "ordo-test"

var shared struct {
	once sync.Once
	srv  *Server
	dir  string
	err  error
}

// Shared returns this test process's server, started on first use, so
// that a package's tests share one. When weed is not built the test is
// skipped, unless ORDO_REQUIRE_S3 is set (CI sets it): then weed is built
// (minutes) or the test fails. A TestMain calls StopShared after m.Run.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	shared.once.Do(func() {
		ctx := context.Background()
		if _, err := Find(); errors.Is(err, ErrMissing) {
			if os.Getenv("ORDO_REQUIRE_S3") == "" {
				shared.err = err
				return
			}
			if _, err := Build(ctx, os.Stderr); err != nil {
				shared.err = err
				return
			}
		}
		if shared.dir, shared.err = os.MkdirTemp("", "ordo-seaweed-"); shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if shared.srv, shared.err = Start(ctx, Options{Dir: shared.dir}); shared.err != nil {
			return
		}
		shared.err = shared.srv.CreateBucket(ctx, TestBucket)
	})
	if errors.Is(shared.err, ErrMissing) && os.Getenv("ORDO_REQUIRE_S3") == "" {
		tb.Skipf("%v (ORDO_REQUIRE_S3 is unset, so this test is skipped)", shared.err)
	}
	if shared.err != nil {
		tb.Fatalf("seaweed: %v", shared.err)
	}
	return shared.srv
}

// StopShared stops the server Shared started, if it did, and removes its
// directory.
func StopShared() {
	if shared.srv != nil {
		_ = shared.srv.Stop()
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
}
