// Package commands is Ordo's write side: every command that changes a flow
// run or a deployment, each decided in domain and appended to the event log
// in one transaction with the write-side rows and River jobs it implies.
//
// Where to look:
//
//   - unitofwork.go: the streams one transaction decides on, appended at
//     the end at the versions they were read at; flowruncache.go keeps
//     recent flow run states and their DAG index between transactions.
//   - settlement.go: what follows from task run events (downstream task
//     runs queued or cancelled, retries queued, progress counted, runs
//     ended, parents of sub-flow runs told); resultcache.go stores and
//     finds cached task results.
//   - createrun.go (Service, ad hoc runs), deploymentruns.go (runs of a
//     deployment), concurrencyslots.go (deployment concurrency limits),
//     subflows.go, cancel.go (a run and its sub-flow runs), retry.go,
//     deployments.go (deployment commands, which need no River),
//     schedule.go (one deployment's scheduler work), reaper.go (the
//     attempts of dead workers), attempts.go (a worker's batch of starts
//     and outcomes) and queueslots.go (work queue concurrency limits).
//   - retrytx.go: the one retry of a command that lost a race with
//     another writer.
//
// It knows River only through Enqueuer (inserting jobs, implemented in jobs
// on River's client) and riverjob (every other statement on River's jobs);
// it reads and appends events only through eventstore.
//
// It depends on domain, eventstore and riverjob; it must never import jobs,
// projections, api or River's client.
package commands
