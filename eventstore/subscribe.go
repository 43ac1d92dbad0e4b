package eventstore

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
)

// Channel is the Postgres NOTIFY channel that announces new events.
const Channel = "ordo_events"

// notifyEvery is the shortest time between two NOTIFYs from one process.
// Subscribers in the same process are woken at once; others at most this
// much later.
const notifyEvery = 5 * time.Millisecond

// InTx runs fn in a transaction and commits it; after a successful commit it
// announces new events to subscribers in this process and, through NOTIFY,
// in every other.
func (s *Store) InTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	if err := pgx.BeginFunc(ctx, s.pool, fn); err != nil {
		return err
	}
	s.Committed()
	return nil
}

// Committed announces that a transaction that appended events has committed.
// Callers that commit their own transactions call it after the commit.
//
// The NOTIFY is sent from a separate, coalescing goroutine rather than from
// the appending transaction: a transaction that notifies takes a global
// lock at commit, which would serialise every append in the database.
func (s *Store) Committed() {
	s.notifier.local.fire()
	s.notifier.start()
	select {
	case s.notifier.kick <- struct{}{}:
	default:
	}
}

// Close stops the store's background goroutines.
func (s *Store) Close() { s.notifier.stop() }

// SubscribeOptions tune a subscription.
type SubscribeOptions struct {
	// BatchSize is the most events handed over at once. Defaults to 1000.
	BatchSize int
	// PollInterval bounds how long new events wait when no notification
	// arrives (a lost connection, or events held back by an older open
	// transaction). Defaults to 200ms.
	PollInterval time.Duration
}

// Subscribe hands every event after `after` to handle, in log order and in
// batches, exactly once, until ctx ends or handle fails; it returns why it
// stopped. It wakes on NOTIFY and falls back to polling.
func (s *Store) Subscribe(ctx context.Context, after Checkpoint, opts SubscribeOptions, handle func(context.Context, []domain.Envelope) error) error {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1000
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 200 * time.Millisecond
	}
	s.notifier.listen()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		wake := s.notifier.local.wait()
		events, err := s.ReadAll(ctx, s.pool, after, opts.BatchSize)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if len(events) > 0 {
			if err := handle(ctx, events); err != nil {
				return err
			}
			after = CheckpointOf(events[len(events)-1])
			if len(events) == opts.BatchSize {
				continue
			}
		}
		timer.Reset(opts.PollInterval)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// notifier carries wake-ups: local ones between goroutines of this process,
// and NOTIFY/LISTEN between processes.
type notifier struct {
	pool  *pgxpool.Pool
	local *signal
	kick  chan struct{}

	mu        sync.Mutex
	started   bool
	listening bool
	cancel    context.CancelFunc
	ctx       context.Context
	wg        sync.WaitGroup
}

func newNotifier(pool *pgxpool.Pool) *notifier {
	ctx, cancel := context.WithCancel(context.Background())
	return &notifier{pool: pool, local: newSignal(), kick: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
}

// start launches the goroutine that sends NOTIFY, once.
func (n *notifier) start() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started || n.ctx.Err() != nil {
		return
	}
	n.started = true
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			select {
			case <-n.ctx.Done():
				return
			case <-n.kick:
			}
			// One NOTIFY covers every commit that kicked while it was sent or
			// during the pause after it: under load, appends are announced
			// at most every notifyEvery, not once each.
			if _, err := n.pool.Exec(n.ctx, `SELECT pg_notify($1, '')`, Channel); err != nil && n.ctx.Err() == nil {
				slog.Debug("notify new events", "err", err)
			}
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(notifyEvery):
			}
		}
	}()
}

// listen launches the goroutine that turns NOTIFY into local wake-ups, once.
func (n *notifier) listen() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.listening || n.ctx.Err() != nil {
		return
	}
	n.listening = true
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		backoff := 100 * time.Millisecond
		for n.ctx.Err() == nil {
			err := n.listenOnce()
			if n.ctx.Err() != nil {
				return
			}
			slog.Debug("event listener reconnecting", "err", err, "in", backoff)
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
		}
	}()
}

func (n *notifier) listenOnce() error {
	conn, err := n.pool.Acquire(n.ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(n.ctx, `LISTEN `+Channel); err != nil {
		return err
	}
	defer func() {
		// a connection returned to the pool must not keep listening
		_, _ = conn.Exec(context.Background(), `UNLISTEN *`)
	}()
	n.local.fire() // events may have arrived while no one listened
	for {
		if _, err := conn.Conn().WaitForNotification(n.ctx); err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		n.local.fire()
	}
}

func (n *notifier) stop() {
	n.cancel()
	n.wg.Wait()
}

// signal wakes every goroutine waiting on it, each time it fires.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

func (s *signal) fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.ch)
	s.ch = make(chan struct{})
}
