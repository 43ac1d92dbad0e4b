// Package groupcommit commits many small writes in few transactions:
// callers hand over items and wait for their outcome; while one
// transaction is committing, new items queue, and the next transaction takes
// every queued item. There is no timer: at low load each item commits at
// once (no added latency), at high load many share a commit, which is what
// lifts a small machine past its commit rate.
//
// It knows nothing of Ordo: it must never import domain, eventstore or River.
package groupcommit

import (
	"context"
	"sync"
)

// Options configure a Committer.
type Options[T any] struct {
	// Run writes items in one transaction. Required.
	Run func(ctx context.Context, items []T) error
	// MaxBatch is the most items in one transaction. Defaults to 500.
	MaxBatch int
	// MaxInFlight is the most transactions at once. Defaults to 1.
	MaxInFlight int
	// Alone reports whether a failed batch should be tried again item by
	// item, so that one bad item fails alone. Nil: always.
	Alone func(err error) bool
	// Retry reports whether an item that failed on its own may succeed if
	// tried again (a version conflict decided afresh). Nil: never.
	Retry func(err error) bool
	// Tries bounds the tries of an item on its own. Defaults to 5.
	Tries int
}

// Committer is a group commit of items of type T.
type Committer[T any] struct {
	opts Options[T]

	mu      sync.Mutex
	queue   []*pending[T]
	running int
	wg      sync.WaitGroup
}

type pending[T any] struct {
	item T
	ctx  context.Context
	done chan error  // Do waits on it
	then func(error) // or Submit's callback
}

// finish hands the item's outcome to its caller.
func (p *pending[T]) finish(err error) {
	if p.then != nil {
		p.then(err)
		return
	}
	p.done <- err
}

// New returns a committer.
func New[T any](opts Options[T]) *Committer[T] {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 500
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 1
	}
	if opts.Tries <= 0 {
		opts.Tries = 5
	}
	return &Committer[T]{opts: opts}
}

// Do commits item, with whatever else is queued, and returns its outcome.
// ctx bounds the transaction when this item starts it.
func (c *Committer[T]) Do(ctx context.Context, item T) error {
	p := &pending[T]{item: item, ctx: ctx, done: make(chan error, 1)}
	c.enqueue(p)
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		// the item may still be committed with its batch
		return ctx.Err()
	}
}

// Submit is Do without the wait: it queues item and returns at once; then
// gets the item's outcome. It is called on the goroutine that ran the
// transaction, so it must not block: a caller that has more to do with the
// outcome than note it starts a goroutine of its own. Handing over items
// this way spares the goroutine per item that waiting on Do would take.
func (c *Committer[T]) Submit(ctx context.Context, item T, then func(error)) {
	c.enqueue(&pending[T]{item: item, ctx: ctx, then: then})
}

func (c *Committer[T]) enqueue(p *pending[T]) {
	c.mu.Lock()
	c.queue = append(c.queue, p)
	if c.running < c.opts.MaxInFlight {
		c.running++
		c.wg.Add(1)
		go c.loop()
	}
	c.mu.Unlock()
}

// Wait returns once no transaction is in flight.
func (c *Committer[T]) Wait() { c.wg.Wait() }

func (c *Committer[T]) loop() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		n := min(len(c.queue), c.opts.MaxBatch)
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

func (c *Committer[T]) commit(batch []*pending[T]) {
	items := make([]T, len(batch))
	for i, p := range batch {
		items[i] = p.item
	}
	ctx := context.WithoutCancel(batch[0].ctx)
	err := c.opts.Run(ctx, items)
	if err == nil || c.opts.Alone != nil && !c.opts.Alone(err) || len(batch) == 1 && !c.retry(err) {
		for _, p := range batch {
			p.finish(err)
		}
		return
	}
	for _, p := range batch {
		var err error
		for range c.opts.Tries {
			if err = c.opts.Run(ctx, []T{p.item}); err == nil || !c.retry(err) {
				break
			}
		}
		p.finish(err)
	}
}

func (c *Committer[T]) retry(err error) bool {
	return c.opts.Retry != nil && c.opts.Retry(err) && (c.opts.Alone == nil || c.opts.Alone(err))
}
