package jobs

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ordoflow/ordo/eventstore"
)

// committer is a group commit: callers hand it items, and it commits them
// in as few transactions as it can. While one transaction is committing,
// new items queue; the next transaction takes every queued item (up to
// maxBatch). There is no timer: at low load each item commits at once, at
// high load many share a commit.
//
// When a batch fails, its items are retried one by one, each a few times
// when the failure is a conflict, so one bad item fails alone.
type committer[T any] struct {
	maxBatch    int
	maxInFlight int // transactions at once
	tries       int
	run         func(ctx context.Context, items []T) error // one transaction for all items

	mu      sync.Mutex
	queue   []*pendingItem[T]
	running int // loops running
	ctx     context.Context
	wg      sync.WaitGroup
}

type pendingItem[T any] struct {
	item T
	done chan error
}

func newCommitter[T any](ctx context.Context, maxBatch, maxInFlight int, run func(context.Context, []T) error) *committer[T] {
	return &committer[T]{maxBatch: maxBatch, maxInFlight: max(maxInFlight, 1), tries: 5, run: run, ctx: ctx}
}

// do commits item, with others, and returns its outcome.
func (c *committer[T]) do(item T) error {
	p := &pendingItem[T]{item: item, done: make(chan error, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, p)
	if c.running < c.maxInFlight {
		c.running++
		c.wg.Add(1)
		go c.loop()
	}
	c.mu.Unlock()
	return <-p.done
}

// wait returns once no batch is in flight.
func (c *committer[T]) wait() { c.wg.Wait() }

func (c *committer[T]) loop() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		n := min(len(c.queue), c.maxBatch)
		if n == 0 {
			c.running--
			c.mu.Unlock()
			return
		}
		batch := c.queue[:n:n]
		c.queue = c.queue[n:]
		c.mu.Unlock()
		c.commit(batch)
	}
}

func (c *committer[T]) commit(batch []*pendingItem[T]) {
	items := make([]T, len(batch))
	for i, p := range batch {
		items[i] = p.item
	}
	err := c.run(c.ctx, items)
	// A broken connection may have committed the batch or not: each item's
	// caller decides what to do, knowing that.
	if err == nil || transient(err) || len(batch) == 1 && !retryable(err) {
		for _, p := range batch {
			p.done <- err
		}
		return
	}
	for _, p := range batch {
		var err error
		for try := 0; try < c.tries; try++ {
			if err = c.run(c.ctx, []T{p.item}); err == nil || !retryable(err) || transient(err) {
				break
			}
		}
		p.done <- err
	}
}

// retryable reports whether deciding again may succeed: a stream version
// conflict, a deadlock or a serialization failure.
func retryable(err error) bool {
	if errors.Is(err, eventstore.ErrConflict) {
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
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
