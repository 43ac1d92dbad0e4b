package jobs

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ordoflow/ordo/riverjob"
)

// waker tells River's producers that queues have new jobs, after the
// transaction that queued them committed: NOTIFY "<schema>.river_insert"
// with {"queue": NAME}, which wakes the producers of every worker on that
// queue (this one included) at once.
//
// River sends the same notification from inside the inserting transaction,
// but at most once per FetchCooldown per queue: a job queued just after
// another would wait for the next poll (FetchPollInterval). The waker sends
// one for every commit that queued jobs, coalescing those that come while a
// notification is being sent, from its own short transaction (a transaction
// that notifies takes a database-wide lock at commit).
type waker struct {
	pool   *pgxpool.Pool
	logger *slog.Logger

	mu      sync.Mutex
	pending map[string]bool
	kicked  chan struct{}
}

func newWaker(pool *pgxpool.Pool, logger *slog.Logger) *waker {
	return &waker{pool: pool, logger: logger, pending: map[string]bool{}, kicked: make(chan struct{}, 1)}
}

// kick asks for notifications of queues.
func (k *waker) kick(queues map[string]bool) {
	if len(queues) == 0 {
		return
	}
	k.mu.Lock()
	maps.Copy(k.pending, queues)
	k.mu.Unlock()
	select {
	case k.kicked <- struct{}{}:
	default:
	}
}

// run sends notifications until ctx ends.
func (k *waker) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-k.kicked:
		}
		k.mu.Lock()
		queues := slices.Sorted(maps.Keys(k.pending))
		clear(k.pending)
		k.mu.Unlock()
		if len(queues) == 0 {
			continue
		}
		nctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := riverjob.NotifyInsert(nctx, k.pool, queues)
		cancel()
		if err != nil && ctx.Err() == nil {
			// River's own notification or its poll still finds the jobs.
			k.logger.Debug("wake queues", "queues", queues, "err", err)
		}
	}
}
