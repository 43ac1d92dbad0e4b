package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// errRunCancelled is the cause of an attempt's context ending because its
// flow run was cancelled.
var errRunCancelled = errors.New("the flow run was cancelled")

// attempts are the attempts a worker is running, by flow run, so that a
// cancellation can stop them.
type attempts struct {
	mu    sync.Mutex
	byRun map[uuid.UUID]map[int64]context.CancelCauseFunc // flow run -> job id -> stop
}

func newAttempts() *attempts {
	return &attempts{byRun: map[uuid.UUID]map[int64]context.CancelCauseFunc{}}
}

func (a *attempts) add(run uuid.UUID, job int64, stop context.CancelCauseFunc) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.byRun[run] == nil {
		a.byRun[run] = map[int64]context.CancelCauseFunc{}
	}
	a.byRun[run][job] = stop
}

func (a *attempts) remove(run uuid.UUID, job int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.byRun[run], job)
	if len(a.byRun[run]) == 0 {
		delete(a.byRun, run)
	}
}

// has reports whether an attempt of the flow run runs here.
func (a *attempts) has(run uuid.UUID) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.byRun[run]) > 0
}

func (a *attempts) runs() []uuid.UUID {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := make([]uuid.UUID, 0, len(a.byRun))
	for id := range a.byRun {
		ids = append(ids, id)
	}
	return ids
}

// stop stops every attempt of run and returns how many there were.
func (a *attempts) stop(run uuid.UUID) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, stop := range a.byRun[run] {
		stop(errRunCancelled)
	}
	return len(a.byRun[run])
}

// watchCancellations stops the attempts of cancelled runs: it listens on
// CancelChannel (reconnecting when the connection drops) and, in case a
// notification is lost, checks the runs of the running attempts every
// CancelCheckInterval.
func (w *Worker) watchCancellations() {
	if !w.opts.noCancelListen {
		w.bg.Go(w.listenCancellations)
	}
	t := time.NewTicker(w.opts.CancelCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
		if err := w.checkCancellations(w.ctx); err != nil && w.ctx.Err() == nil {
			w.opts.Logger.Warn("check for cancelled flow runs", "err", err)
		}
	}
}

func (w *Worker) listenCancellations() {
	backoff := 100 * time.Millisecond
	for w.ctx.Err() == nil {
		began := time.Now()
		err := w.listenOnce()
		if w.ctx.Err() != nil {
			return
		}
		if time.Since(began) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		w.opts.Logger.Warn("listen for cancelled flow runs; reconnecting", "err", err, "in", backoff)
		select {
		case <-w.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (w *Worker) listenOnce() error {
	pc, err := w.pool.Acquire(w.ctx)
	if err != nil {
		return err
	}
	conn := pc.Hijack() // held for as long as it listens
	defer conn.Close(context.Background())
	if _, err := conn.Exec(w.ctx, "LISTEN "+commands.CancelChannel); err != nil {
		return err
	}
	// What was cancelled while no one listened.
	if err := w.checkCancellations(w.ctx); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(w.ctx)
		if err != nil {
			return err
		}
		if id, err := uuid.Parse(n.Payload); err == nil {
			if k := w.running.stop(id); k > 0 {
				w.opts.Logger.Info("flow run cancelled: stopping its attempts", "flow_run_id", id, "attempts", k)
			}
		}
	}
}

// cancelTypes are the events after which a run's attempts stop, or (a
// retry) run again.
var cancelTypes = []string{
	domain.FlowRunCancelling{}.EventType(), domain.FlowRunCancelled{}.EventType(), domain.FlowRunRetried{}.EventType(),
}

// checkCancellations stops the running attempts of runs that are being
// cancelled or were cancelled (and not retried since).
func (w *Worker) checkCancellations(ctx context.Context) error {
	runs := w.running.runs()
	if len(runs) == 0 {
		return nil
	}
	slices.SortFunc(runs, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	last, err := eventstore.LastOfTypes(ctx, w.pool, runs, cancelTypes)
	if err != nil {
		return fmt.Errorf("read cancellations: %w", err)
	}
	for id, typ := range last {
		if typ == (domain.FlowRunRetried{}).EventType() {
			continue
		}
		if k := w.running.stop(id); k > 0 {
			w.opts.Logger.Info("flow run cancelled: stopping its attempts", "flow_run_id", id, "attempts", k)
		}
	}
	return nil
}
