package jobs

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/internal/groupcommit"
)

// newCommitter returns the group commit of a worker's task starts or
// outcomes: one transaction for every item queued while the previous one
// committed. A batch that fails for a reason other than a lost connection
// is tried item by item, each a few times when the failure is a conflict.
// A broken connection may have committed the batch or not: each item's
// caller decides what to do, knowing that.
func newCommitter[T any](maxBatch int, run func(context.Context, []T) error) *groupcommit.Committer[T] {
	return groupcommit.New(groupcommit.Options[T]{
		Run:      run,
		MaxBatch: maxBatch,
		Alone:    func(err error) bool { return !transient(err) },
		Retry:    commands.Retryable,
	})
}

// transient reports whether err says the database could not be reached or
// the connection broke (a restart, a failover, a network cut): trying again
// later may succeed, and a commit in flight may or may not have happened.
func transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// connection exceptions, operator intervention (shutdown, crash
		// recovery), too many connections
		return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P") || pgErr.Code == "53300"
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr), errors.As(err, &netErr), pgconn.Timeout(err), pgconn.SafeToRetry(err):
		return true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPIPE):
		return true
	}
	return false
}
