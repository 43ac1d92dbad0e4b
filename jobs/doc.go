// Package jobs runs flow runs on River: it creates runs (the write side of
// flow runs), works task runs on workers that take only their own work
// queues (work queues are River queues), advances the DAG as tasks finish,
// makes scheduled jobs due on time, cancels and retries runs, reuses cached
// results, starts sub-flow runs, and recovers the attempts of workers that
// died (the Reaper).
//
// Every state change goes through the domain's decisions and is appended to
// the event log in the same transaction as the River jobs it implies and the
// end of the River job that caused it: the job is deleted, as finished (see
// settlement.finishedJobs); the worker's River client then leaves those
// jobs out of the completions it sends (see workerPilot). Beside River's
// client, the package writes River's river_job table directly in a few
// places, always inside those transactions: jobs queued as tasks become
// ready (without the insert notification River would send from inside the
// transaction; a notification follows the commit), finished jobs deleted
// in batches, jobs of a cancelled run cancelled, jobs of a dead worker
// discarded, and due jobs made available; and, on its own, the job of an
// outcome that could not be recorded, made available again (giveBack).
//
// It depends on domain and eventstore; it must never import projections or
// api.
package jobs
