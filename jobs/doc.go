// Package jobs is Ordo's River runtime: the Worker (a River client on its
// work queues that records each task run job's start and outcome through
// commands.Attempts, runs command tasks and Go handlers, stores their logs,
// and stops the attempts of cancelled runs), the Scheduler loop, the Reaper
// loop, the DueTimer, and RiverEnqueuer, the River client commands insert
// jobs with. What a start or an outcome changes is decided in commands.
//
// Files: worker.go (the River worker, its group commits and heartbeat),
// execute.go and gohandlers.go (command tasks and Go handlers), logs.go,
// cancellations.go (the LISTEN loop that stops cancelled runs' attempts),
// scheduler.go, reaper.go, duetimer.go, wake.go (River's insert
// notification after a commit), riverpilot.go (River's completions of the
// jobs Ordo's transactions deleted are left out) and enqueuer.go.
//
// # The scheduler
//
// One scheduler leads at a time: Run holds a Postgres session advisory lock
// on a connection of its own (taken again after that connection is lost),
// so with several servers exactly one schedules. Creation is idempotent
// anyway: each scheduled run has a row in scheduled_runs whose primary key
// is (deployment, epoch, scheduled time), and the deployment's row in
// deployment_schedules is locked while its runs are created, so even two
// schedulers ticking at once create each run once.
//
// Each tick, for every deployment that is not paused or deleted and has a
// schedule:
//
//   - Runs created ahead: every scheduled time in (now, now+Lookahead], and
//     at least the next MinRuns, capped at MaxRuns (see SchedulerOptions),
//     has a SCHEDULED run with AutoScheduled set, created with the
//     deployment's default parameters.
//   - Lateness: a run it created that no task of has started LateAfter
//     after its scheduled time gets FlowRunLate (if it is still
//     SCHEDULED), with the reason "not started within LateAfter of its
//     scheduled time". So do the other runs of deployments (manual and
//     sub-flow runs), whatever their deployment's schedule.
//   - Catch-up: late runs that never started, and scheduled times up to
//     now-LateAfter that have no run because no scheduler was up (the
//     deployment's schedule is followed from where the scheduler last got,
//     or from when the schedule began: its creation, last change or
//     resumption), are handled by the deployment's catch_up policy: "all"
//     keeps every late run and creates a run for each missed time (the
//     latest MaxCatchUp of them; older ones are skipped and logged);
//     "latest" keeps only the newest of all of them, late run or missed time
//     (a missed time gets a run), and cancels every other late run with the
//     reason "superseded by catch-up policy latest"; "none" creates nothing
//     for missed times and cancels every late run with the reason "missed;
//     catch_up: none". Runs waiting for a concurrency slot are left to the
//     concurrency policy. Runs for missed times are due at once: their
//     scheduled_at in the log is when they were created, and scheduled_runs
//     keeps the time they stand for.
//   - Obsolete runs: when the deployment's schedule, or what its runs are
//     made of (flow, parameters, parameters_schema, work_queue, tags),
//     changes, or it is paused or deleted, its auto-scheduled runs that
//     have not started are cancelled, with the reason "schedule changed",
//     "deployment changed: FIELDS", "deployment paused" or "deployment
//     deleted", and their queued River jobs cancelled, in one transaction.
//     Deployment commands do this in their own transaction already; the
//     tick catches runs created concurrently with the command.
//   - Concurrency: runs waiting for a slot of a deployment with a
//     concurrency_limit are admitted when due and a slot is free, and the
//     slots of runs that ended are freed (see commands.DeploymentRuns).
//
// It depends on domain, eventstore, riverjob and commands; it must never
// import projections or api.
package jobs
