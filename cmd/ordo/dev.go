package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

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
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a server and a worker in one process, on a local PostgreSQL started for you",
		Long: `Run Ordo for development: the server (API and UI on http://127.0.0.1:4200)
and a worker in one process. When no database URL is configured, it starts
a private PostgreSQL whose data is kept in --data-dir across restarts
(PostgreSQL's server binaries must be installed: scripts/install-deps does it).
The worker takes the queues default and ml unless -q says otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if len(wo.queues) == 0 {
				wo.queues = devQueues
			}
			if err := wo.validate(); err != nil {
				return err
			}
			logger := newLogger(cmd.ErrOrStderr())
			var err error
			if wo.pythonPath, err = devPython(ctx, wo.python, logger); err != nil {
				return domain.Invalid("python", "%v", err)
			}
			url := so.databaseURL
			if url == "" {
				abs, err := filepath.Abs(filepath.Join(dataDir, "postgres"))
				if err != nil {
					return err
				}
				pg, err := localpg.Start(ctx, localpg.Options{DataDir: abs})
				if err != nil {
					return fmt.Errorf("start a local PostgreSQL: %w", err)
				}
				if !pg.Reused() {
					defer pg.Stop(context.WithoutCancel(ctx)) //nolint:errcheck
				}
				logger.Info("local PostgreSQL ready", "url", pg.URL(), "data", abs)
				url = pg.URL()
				wo.env = withLocalPostgres(os.Environ(), pg.Port())
			}
			pool, err := openPool(ctx, url)
			if err != nil {
				return err
			}
			defer pool.Close()
			so.migrate = true
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
	return cmd
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
