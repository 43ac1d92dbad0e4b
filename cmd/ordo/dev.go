package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/internal/localpg"
)

func newDevCommand() *cobra.Command {
	var (
		so      serverOptions
		wo      workerOptions
		dataDir string
		dbPort  int
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a server and a worker in one process, on a local PostgreSQL started for you",
		Long: `Run Ordo for development: the server (API and UI on http://127.0.0.1:4200)
and a worker in one process. When no database URL is configured, it starts
a private PostgreSQL whose data is kept in --data-dir across restarts
(PostgreSQL's server binaries must be installed: scripts/install-deps does it),
on a stable port: --db-port, or the one it had last time; when another program
holds it, a free one. ` + "`ordo dev url`" + ` prints its URL, and the commands that
talk to the database (migrate, replay, tokens, prune, ...) use it when no
database URL is configured. SIGTERM or Ctrl-C stops the server, the worker and
that PostgreSQL. The worker takes the queues default and ml unless -q says
otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if len(wo.queues) == 0 {
				wo.queues = devQueues
			}
			if err := wo.validate(); err != nil {
				return err
			}
			wo.blobStore = cmd.Flags().Lookup("blob-store").Value.String() // shared with the server
			logger := newLogger(cmd.ErrOrStderr())
			var err error
			if wo.pythonPath, err = devPython(ctx, wo.python, pathPython(), logger); err != nil {
				return domain.Invalid("python", "%v", err)
			}
			url := so.databaseURL
			if url == "" {
				lock, err := lockDataDir(dataDir)
				if err != nil {
					return err
				}
				defer lock.Close()
				pg, err := startDevPostgres(ctx, dataDir, dbPort, cmd.Flags().Changed("db-port"), logger)
				if err != nil {
					return err
				}
				// Stopped whether this process started it or found it left
				// running by an ordo dev that was killed: holding the data
				// dir's lock makes it ours.
				defer pg.Stop(context.WithoutCancel(ctx)) //nolint:errcheck
				url = pg.URL()
				wo.env = withLocalPostgres(os.Environ(), pg.Port())
			}
			pool, err := openPool(ctx, url)
			if err != nil {
				return err
			}
			defer pool.Close()
			so.migrate = true
			so.allowPrivateWebhooks = true // a developer's receivers are local
			if wo.workspaceDir == "" {
				wo.workspaceDir = filepath.Join(dataDir, "workspaces")
			}
			srv, err := newServer(ctx, pool, so, logger)
			if err != nil {
				return err
			}
			g, ctx := errgroup.WithContext(ctx)
			g.Go(func() error { return srv.run(ctx, nil) })
			g.Go(func() error { return runWorker(ctx, pool, srv.store, wo, nil, logger) })
			return g.Wait()
		},
	}
	so.register(cmd)
	_ = cmd.Flags().MarkHidden("migrate") // dev always migrates
	wo.register(cmd, false)
	cmd.Flags().StringVar(&dataDir, "data-dir", defaultDataDir(), flagHelp("data-dir", "where the local PostgreSQL keeps its data"))
	cmd.Flags().IntVar(&dbPort, "db-port", defaultDevDBPort, flagHelp("db-port", "port of the local PostgreSQL on 127.0.0.1 (default: the one it had last time, first 54329)"))
	cmd.AddCommand(newDevURLCommand())
	return cmd
}

func newDevURLCommand() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "url",
		Short: "Print the URL of the dev database (the local PostgreSQL of `ordo dev`)",
		Long: `Print the connection URL of the local PostgreSQL that ` + "`ordo dev`" + ` (make dev)
runs for --data-dir, for psql, scripts and other tools:

  psql "$(ordo dev url)"
  ML_DATABASE_URL=$(bin/ordo dev url) scripts/ml-python examples/ml-pipeline/seed.py

It fails when that database is not running.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			url, err := devDatabaseURL(dataDir)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), url)
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", defaultDataDir(), flagHelp("data-dir", "the data dir of `ordo dev`"))
	return cmd
}

// defaultDevDBPort is the dev database's port the first time: a fixed one,
// so that its URL stays the same across restarts, away from PostgreSQL's
// usual 5432.
const defaultDevDBPort = 54329

// devPortFile, in the data dir, remembers the dev database's port.
const devPortFile = "postgres.port"

// startDevPostgres starts (or adopts) the dev database in dataDir on the
// remembered port, else port. A port taken by another program is an error
// when the user chose it, otherwise a free port is used instead and
// remembered.
func startDevPostgres(ctx context.Context, dataDir string, port int, chosen bool, logger *slog.Logger) (*localpg.Server, error) {
	pgDir := filepath.Join(dataDir, "postgres")
	if !chosen {
		if b, err := os.ReadFile(filepath.Join(dataDir, devPortFile)); err == nil {
			if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && p > 0 && p < 65536 {
				port = p
			}
		}
	}
	pg, err := localpg.Start(ctx, localpg.Options{DataDir: pgDir, Port: port})
	if errors.Is(err, localpg.ErrPortInUse) && !chosen {
		logger.Warn("the dev database's port is taken by another program: using a free port instead, kept for next time (`ordo dev url` prints the URL; --db-port chooses)", "port", port)
		pg, err = localpg.Start(ctx, localpg.Options{DataDir: pgDir})
	}
	if err != nil {
		return nil, fmt.Errorf("start a local PostgreSQL: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, devPortFile), []byte(strconv.Itoa(pg.Port())+"\n"), 0o644); err != nil {
		_ = pg.Stop(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("remember the dev database's port: %w", err)
	}
	if pg.Reused() {
		logger.Info("local PostgreSQL found running (left by an ordo dev that did not stop): adopted, and stopped with this one", "data", pgDir)
	}
	logger.Info("local PostgreSQL ready (`ordo dev url` prints its URL)", "url", pg.URL(), "data", pgDir)
	return pg, nil
}

// lockDataDir takes the data dir's lock for the life of this process, so
// that one ordo dev at a time runs (and stops) its PostgreSQL.
func lockDataDir(dataDir string) (*os.File, error) {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dataDir, "dev.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another ordo dev runs on the data dir %s: stop it first, or give this one another --data-dir", dataDir)
	}
	return f, nil
}

// devDatabaseURL returns the URL of the dev database running in dataDir,
// or an error that says how to get one.
func devDatabaseURL(dataDir string) (string, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return "", err
	}
	port, ok := localpg.Running(filepath.Join(abs, "postgres"))
	if !ok {
		return "", fmt.Errorf("no dev database is running in %s: start it with `make dev` (or `ordo dev`) in that directory", abs)
	}
	return localpg.URLFor(port), nil
}

// defaultDevDatabaseURL is the database of the commands that open one when
// none is configured: the dev database of ORDO_DATA_DIR, else ./.ordo.
func defaultDevDatabaseURL() (string, error) {
	dir := os.Getenv(envName("data-dir"))
	if dir == "" {
		dir = defaultDataDir()
	}
	url, err := devDatabaseURL(dir)
	if err != nil {
		return "", fmt.Errorf("no database: set --database-url, ORDO_DATABASE_URL or DATABASE_URL; %w", err)
	}
	return url, nil
}

// withLocalPostgres gives tasks that inherit PG* variables (the example ML
// pipeline reads its data with them) the local PostgreSQL, unless the
// environment already names one.
func withLocalPostgres(env []string, port int) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "PGHOST=") || strings.HasPrefix(kv, "DATABASE_URL=") || strings.HasPrefix(kv, "ML_DATABASE_URL=") {
			return env
		}
	}
	return append(env, "PGHOST=127.0.0.1", fmt.Sprintf("PGPORT=%d", port), "PGUSER=postgres", "PGDATABASE=postgres")
}

// devQueues are the queues `ordo dev`'s worker takes when none are given.
var devQueues = []string{"default", "ml"}

func defaultDataDir() string {
	if wd, err := os.Getwd(); err == nil {
		return filepath.Join(wd, ".ordo")
	}
	return ".ordo"
}
