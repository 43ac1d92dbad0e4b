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

var (
	built struct {
		once sync.Once
		err  error
	}
	shared struct {
		once sync.Once
		srv  *Server
		dir  string
		err  error
	}
)

// Need skips the test when weed is not built, unless ORDO_REQUIRE_S3 is
// set (CI sets it): then it builds weed (minutes) or fails the test.
func Need(tb testing.TB) {
	tb.Helper()
	built.once.Do(func() {
		if _, built.err = Find(); errors.Is(built.err, ErrMissing) && os.Getenv("ORDO_REQUIRE_S3") != "" {
			_, built.err = Build(context.Background(), os.Stderr)
		}
	})
	if errors.Is(built.err, ErrMissing) {
		tb.Skipf("%v (ORDO_REQUIRE_S3 is unset, so this test is skipped)", built.err)
	}
	if built.err != nil {
		tb.Fatal(built.err)
	}
}

// Shared returns this test process's server, started on first use, so
// that a package's tests share one (see Need for when weed is missing). A
// TestMain calls StopShared after m.Run.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	Need(tb)
	shared.once.Do(func() {
		if shared.dir, shared.err = os.MkdirTemp("", "ordo-seaweed-"); shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if shared.srv, shared.err = Start(ctx, Options{Dir: shared.dir}); shared.err != nil {
			return
		}
		shared.err = shared.srv.CreateBucket(ctx, TestBucket)
	})
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
