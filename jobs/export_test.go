package jobs

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ordoflow/ordo/riverjob"
)

// ObserveDueTimer makes d send its events to events: "listening" once it
// listens for jobs queued for later, "sleep" before each of its sleeps,
// "woken" when a wake-up ends one, and what it heard.
func ObserveDueTimer(d *DueTimer, events chan<- string) {
	d.observe = func(e string) { events <- e }
}

// DisableCancelListen makes a worker rely on its periodic check alone to
// find cancelled runs, as when a notification is lost.
func DisableCancelListen(o *WorkerOptions) { o.noCancelListen = true }

// CommittedEarlier reports which of the jobs, each the job of an outcome
// whose commit was tried again, a first try already finished.
func CommittedEarlier(ctx context.Context, tx pgx.Tx, jobIDs []int64) (map[int64]bool, error) {
	done, err := riverjob.NotRunning(ctx, tx, jobIDs)
	landed := map[int64]bool{}
	for _, id := range done {
		landed[id] = true
	}
	return landed, err
}

// DeletedJobs reports how many jobs the worker's commits deleted whose
// completion River's client has not sent yet, and how many such
// completions its pilot left out so far.
func DeletedJobs(w *Worker) (pending int, leftOut int64) {
	w.deleted.mu.Lock()
	defer w.deleted.mu.Unlock()
	return len(w.deleted.ids), w.deleted.leftOut
}

// SetWorkspaceSweep sets how often a worker looks for the workspaces of
// ended runs to remove.
func SetWorkspaceSweep(o *WorkerOptions, d time.Duration) { o.workspaceSweep = d }
