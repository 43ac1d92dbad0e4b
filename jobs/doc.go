// Package jobs is Ordo's River runtime: the Worker (a River client on its
// work queues that records each task run job's start and outcome through
// commands.Attempts, runs command tasks and Go handlers, stores their logs,
// and stops the attempts of cancelled runs), the Scheduler loop, the Reaper
// loop, the DueTimer, and RiverEnqueuer, the River client commands insert
// jobs with. What a start or an outcome changes is decided in commands.
//
// Files: worker.go (the River worker, its group commits and heartbeat),
// execute.go and gohandlers.go (command tasks and Go handlers), python.go
// and pywarm.go (Python tasks: the interpreter, the package and the warm
// interpreters),
// attemptfiles.go, outputs.go and inputs.go (an attempt's output and input
// directories and metrics: outputs stored in the blob store, inputs fetched
// once per worker into a digest cache and hard linked), logs.go,
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
// # Python tasks and the warm interpreter
//
// A task whose command is `python3|python -m ordo run FILE ...` (what the
// Python SDK deploys) gets the worker's own `ordo` package, extracted once
// under WorkspaceDir/.python-sdk, last on its PYTHONPATH. Unless
// DisableWarmPython is set, its attempt is not started by the worker but
// forked by a warm interpreter, `python -m ordo warm FILE`, which imported
// FILE (and so its libraries) once: one per interpreter, absolute FILE,
// working directory and environment without the ORDO_* variables, started
// on first use (attempts arriving meanwhile wait for that start), at most
// 8 (the least recently used is stopped once its children ended), all
// stopped when the worker stops. The child is what a started process would
// be: its own process group, stdin /dev/null, its stdout and stderr the
// attempt's log pipes (passed over the interpreter's socket), the
// attempt's environment and the worker's working directory; timeouts,
// cancellation and the results, outputs and metrics are handled alike;
// only what FILE prints while it is imported is in no task's log.
//
//   - An interpreter that cannot start (FILE does not import): that attempt
//     runs cold, so its log shows the error; the next tries again.
//   - A module file under FILE's directory changed since the import: the
//     interpreter answers stale, is replaced, and the request is repeated.
//     The old one exits once its running children ended.
//   - An interpreter that dies while a child runs: the child's group is
//     killed and the attempt handed back (Interrupted), so it runs again at
//     once without using a retry.
//   - A request larger than the socket takes (an attempt's inputs and
//     parameters travel in its environment) runs cold.
//
// # The reaper
//
// The Reaper recovers from workers that died (SIGKILL, a lost machine, a
// network cut): a worker whose heartbeat is older than DeadAfter is declared
// dead, and every attempt it was running is recorded as crashed
// (FailTaskRun with Crashed): the task run's retry policy then queues a new
// attempt, which another worker takes, or the task run ends CRASHED and its
// flow run with it. The dead worker's River jobs are discarded in the same
// transaction, so River never works them again, and an attempt it had
// fetched but not started yet is queued again. If the worker was not dead
// after all and reports a result later, that result is refused (and
// recorded as refused).
//
// Any number of processes may run a reaper: each pass takes a Postgres
// advisory lock for its transaction, and passes that do not get it skip.
// A reaper also deletes expired cache entries, and frees the work queue
// slots that no running attempt uses. Its verdicts are commands.Reaping's.
//
// It cannot stop the processes of a dead worker's tasks on other hosts;
// on the worker's own host the kernel kills a task whose worker died (see
// taskProcAttr), though not the processes that task started in turn.
//
// # The due timer
//
// The DueTimer makes scheduled task run jobs available at their time.
//
// River moves scheduled jobs to available only every 5 seconds, so a retry
// delay of 1 s would become up to 6 s and a run due at 10:05:00 would start
// up to 10:05:05. The timer sleeps until the earliest scheduled_at among
// scheduled ordo.task_run jobs, then sets the due ones available and sends
// River's insert notification for their queues (NOTIFY
// "<schema>.river_insert" with {"queue": NAME}), which wakes the producers
// of every worker on those queues at once.
//
// A due job is never left to a poll:
//
//   - Every transaction that queues a task run job for later notifies the
//     timers (riverjob.NotifyDueTx, on "<schema>.ordo_due", delivered at its
//     commit), and each timer listens on a connection of its own and reads
//     the next due time again when told, unless the job is due after the
//     timer's next look anyway (the notification carries its due time). So
//     a job inserted by a transaction that commits after the timer looked,
//     in any process, is seen at its commit. WakeAt does the same within a
//     process.
//   - River's own scheduler makes jobs due in its next 5 s available ahead
//     of time, without telling anyone. The timer notifies their queues when
//     their time comes, and reads them in a statement of its own after the
//     one that moves the jobs it finds scheduled: that first statement waits
//     for a River transaction that holds one of them locked, so the second
//     sees what River committed (one statement would read them as still
//     scheduled, skip them once River's lock is gone, and leave them to the
//     workers' fetch poll).
//
// PollInterval remains as a safety net for when the listening connection
// is lost. Several timers may run against one database (one per worker and
// server): making a job available is idempotent.
//
// It depends on domain, eventstore, riverjob, commands, blobstore and
// pythonsdk; it must never import projections or api.
package jobs
