package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/jobs"
)

// workerOptions are the flags of `ordo worker` (and of `ordo dev`).
type workerOptions struct {
	databaseURL       string
	queues            []string
	concurrency       int
	name              string
	workspaceDir      string
	workspaceKeep     time.Duration
	fetchCooldown     time.Duration
	fetchPollInterval time.Duration
	shutdownGrace     time.Duration
	maxLogBytes       int64
	env               []string // the environment tasks may inherit from; nil: the process's
	python            string   // --python as given
	pythonPath        string   // the interpreter resolved from it; "" for PATH
	warmPython        bool
	blobStore         string
	blobCacheDir      string
	blobCacheBytes    int64
	maxOutputBytes    int64
	maxAttemptOutputs int64
}

func (o *workerOptions) register(cmd *cobra.Command, withDatabase bool) {
	if withDatabase {
		cmd.Flags().StringVar(&o.databaseURL, "database-url", "", flagHelp("database-url", "PostgreSQL connection URL; also read from DATABASE_URL"))
	}
	cmd.Flags().StringSliceVarP(&o.queues, "queue", "q", nil, flagHelp("queues", "work queue to take task runs from; repeat or separate with commas"))
	cmd.Flags().IntVar(&o.concurrency, "concurrency", 10, flagHelp("concurrency", "task runs run at once per queue"))
	cmd.Flags().StringVar(&o.name, "name", "", flagHelp("name", "worker name shown in the UI and events (default hostname-pid)"))
	cmd.Flags().StringVar(&o.workspaceDir, "workspace-dir", "", flagHelp("workspace-dir", "directory for the runs' ORDO_WORKSPACE directories (default $TMPDIR/ordo/workspaces)"))
	cmd.Flags().DurationVar(&o.workspaceKeep, "workspace-retention", jobs.DefaultWorkspaceRetention, flagHelp("workspace-retention", "how long a run's workspace is kept after the run ended (0: for ever)"))
	cmd.Flags().DurationVar(&o.fetchCooldown, "fetch-cooldown", 2*time.Millisecond, flagHelp("fetch-cooldown", "shortest time between two fetches of work from one queue"))
	cmd.Flags().DurationVar(&o.fetchPollInterval, "fetch-poll-interval", 200*time.Millisecond, flagHelp("fetch-poll-interval", "how often a queue is polled when no notification arrives"))
	cmd.Flags().Int64Var(&o.maxLogBytes, "max-log-bytes", jobs.DefaultMaxLogBytes, flagHelp("max-log-bytes", "output stored per task attempt; past it the task runs on and the rest is dropped (-1: no cap)"))
	cmd.Flags().StringVar(&o.python, "python", "", flagHelp("python", "interpreter for command tasks whose command starts with python3 or python (default: python3 on PATH)"))
	cmd.Flags().BoolVar(&o.warmPython, "warm-python", true, flagHelp("warm-python", "fork Python tasks (python3 -m ordo run FILE ...) from an interpreter that imported FILE once; false starts a fresh interpreter for each"))
	cmd.Flags().DurationVar(&o.shutdownGrace, "shutdown-grace", 30*time.Second, flagHelp("shutdown-grace", "on SIGTERM, how long running tasks may take to finish before they are handed back"))
	// ordo dev's server may have registered it: one flag serves both
	if cmd.Flags().Lookup("blob-store") == nil {
		cmd.Flags().StringVar(&o.blobStore, "blob-store", "", flagHelp("blob-store", "where task outputs are stored: postgres (the default), file:///path or s3://bucket/prefix"))
	}
	cmd.Flags().StringVar(&o.blobCacheDir, "blob-cache-dir", "", flagHelp("blob-cache-dir", "where the worker keeps the input files it fetched, on the file system of --workspace-dir (default <workspace-dir>/.blobs)"))
	cmd.Flags().Int64Var(&o.blobCacheBytes, "blob-cache-bytes", jobs.DefaultBlobCacheBytes, flagHelp("blob-cache-bytes", "bytes of input files kept in --blob-cache-dir; past it the least recently used are removed"))
	cmd.Flags().Int64Var(&o.maxOutputBytes, "max-output-bytes", jobs.DefaultMaxOutputBytes, flagHelp("max-output-bytes", "largest output file a task attempt may store"))
	cmd.Flags().Int64Var(&o.maxAttemptOutputs, "max-attempt-output-bytes", jobs.DefaultMaxAttemptOutputBytes, flagHelp("max-attempt-output-bytes", "bytes of output files one task attempt may store in all"))
}

// envName of the -q flag is ORDO_QUEUES, as documented.
func init() { flagEnvOverrides["queue"] = "ORDO_QUEUES" }

func newWorkerCommand() *cobra.Command { return newWorkerCommandWith(nil) }

// newWorkerCommandWith is `ordo worker` with Go handlers compiled in
// (`ordo bench worker` has the benchmarks' no-op handler).
func newWorkerCommandWith(handlers *jobs.Handlers) *cobra.Command {
	var o workerOptions
	cmd := &cobra.Command{
		Use:   "worker -q QUEUE [-q QUEUE...]",
		Short: "Run task runs from the given work queues",
		Long: `Run a worker: it takes task runs only from the work queues it is started
with, runs them (commands as child processes, Go handlers in process), and
records every state change. Start as many as you like, on any machines that
reach the database.

On SIGTERM or Ctrl-C the worker stops taking work, lets running task runs
finish within --shutdown-grace, and hands the rest back to be run again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			logger := newLogger(cmd.ErrOrStderr())
			var err error
			if o.pythonPath, err = jobs.ResolvePython(o.python); err != nil {
				return domain.Invalid("python", "%v", err)
			}
			pool, err := openPool(cmd.Context(), o.databaseURL)
			if err != nil {
				return err
			}
			defer pool.Close()
			store := eventstore.New(pool, domain.NewRegistry())
			defer store.Close()
			return runWorker(cmd.Context(), pool, store, o, handlers, logger)
		},
	}
	o.register(cmd, true)
	return cmd
}

// validate checks the flags that need no database.
func (o workerOptions) validate() error {
	if len(o.queues) == 0 {
		return domain.Invalid("queue", "name at least one work queue with -q (or ORDO_QUEUES)")
	}
	if o.workspaceKeep < 0 {
		return domain.Invalid("workspace-retention", "must not be negative (0 keeps workspaces for ever)")
	}
	for name, v := range map[string]int64{"blob-cache-bytes": o.blobCacheBytes, "max-output-bytes": o.maxOutputBytes, "max-attempt-output-bytes": o.maxAttemptOutputs} {
		if v <= 0 {
			return domain.Invalid(name, "must be positive")
		}
	}
	return nil
}

// workspaceRetention is the flag's retention as WorkerOptions take it:
// the flag's 0 (keep for ever) is a negative retention.
func workspaceRetention(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// runWorker works until ctx ends, then shuts down gracefully; o has been
// validated.
func runWorker(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store, o workerOptions, handlers *jobs.Handlers, logger *slog.Logger) error {
	blobs, err := openWorkerBlobStore(ctx, o.blobStore, pool, logger)
	if err != nil {
		return err
	}
	if blobs != nil {
		defer blobs.Close()
	}
	w, err := jobs.NewWorker(pool, store, jobs.WorkerOptions{
		Queues:                o.queues,
		Concurrency:           o.concurrency,
		Handlers:              handlers,
		Name:                  o.name,
		WorkspaceDir:          o.workspaceDir,
		WorkspaceRetention:    workspaceRetention(o.workspaceKeep),
		FetchCooldown:         o.fetchCooldown,
		FetchPollInterval:     o.fetchPollInterval,
		MaxLogBytes:           o.maxLogBytes,
		Env:                   o.env,
		Python:                o.pythonPath,
		DisableWarmPython:     !o.warmPython,
		Logger:                logger,
		BlobStore:             blobs,
		BlobCacheDir:          o.blobCacheDir,
		BlobCacheBytes:        o.blobCacheBytes,
		MaxOutputBytes:        o.maxOutputBytes,
		MaxAttemptOutputBytes: o.maxAttemptOutputs,
	})
	if err != nil {
		return err
	}
	if err := w.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	logger.Info("ordo worker started", "name", w.Name(), "queues", o.queues, "concurrency", o.concurrency, "python", orNone(o.pythonPath), "warm_python", o.warmPython)
	<-ctx.Done()
	logger.Info("ordo worker stopping: finishing running task runs", "grace", o.shutdownGrace.String())
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.shutdownGrace)
	defer cancel()
	return w.Stop(stopCtx)
}

// openWorkerBlobStore opens the blob store the worker's tasks store their
// outputs in. A store named explicitly must open, or the worker does not
// start; when the default cannot be opened the worker still runs the tasks
// that exchange no files, and the others fail saying why.
func openWorkerBlobStore(ctx context.Context, url string, pool *pgxpool.Pool, logger *slog.Logger) (blobstore.Store, error) {
	s, err := blobstore.Open(ctx, url, pool)
	switch {
	case err == nil:
		return s, nil
	case url != "":
		return nil, domain.Invalid("blob-store", "%v", err)
	}
	logger.Warn("no blob store: tasks that write outputs or read input files will fail", "err", err)
	return nil, nil
}
