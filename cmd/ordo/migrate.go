package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/migrations"
)

func openPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	if url == "" {
		var err error
		if url, err = defaultDevDatabaseURL(); err != nil {
			return nil, err
		}
	}
	pool, err := eventstore.NewPool(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return pool, nil
}

func newMigrateCommand() *cobra.Command {
	var url string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Manage the database schema (Ordo's tables and River's)",
	}
	cmd.PersistentFlags().StringVar(&url, "database-url", "", flagHelp("database-url", "PostgreSQL connection URL; also read from DATABASE_URL"))

	up := &cobra.Command{
		Use:   "up",
		Short: "Apply every pending migration (safe to run again)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pool, err := openPool(cmd.Context(), url)
			if err != nil {
				return err
			}
			defer pool.Close()
			if err := migrations.Up(cmd.Context(), pool); err != nil {
				return err
			}
			return printVersion(cmd, pool)
		},
	}
	var steps int
	var all bool
	down := &cobra.Command{
		Use:   "down",
		Short: "Roll back Ordo's newest migration (--steps N for more, --all for everything including River's tables)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if steps < 1 && !all {
				return errors.New("--steps must be at least 1")
			}
			pool, err := openPool(cmd.Context(), url)
			if err != nil {
				return err
			}
			defer pool.Close()
			if all {
				steps = 0
			}
			if err := migrations.Down(cmd.Context(), pool, steps, all); err != nil {
				return err
			}
			return printVersion(cmd, pool)
		},
	}
	down.Flags().IntVar(&steps, "steps", 1, flagHelp("steps", "how many of Ordo's migrations to roll back"))
	down.Flags().BoolVar(&all, "all", false, "roll back every migration, River's tables too: deletes all data (command line only)")
	_ = down.Flags().SetAnnotation("all", noEnv, []string{"true"})
	ver := &cobra.Command{
		Use:   "version",
		Short: "Print the database's schema versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pool, err := openPool(cmd.Context(), url)
			if err != nil {
				return err
			}
			defer pool.Close()
			return printVersion(cmd, pool)
		},
	}
	cmd.AddCommand(up, down, ver)
	return cmd
}

func printVersion(cmd *cobra.Command, pool *pgxpool.Pool) error {
	v, err := migrations.Status(cmd.Context(), pool)
	if err != nil {
		return err
	}
	state := "current"
	switch {
	case v.Dirty:
		state = "dirty: a migration failed half-way; fix it by hand, then run `ordo migrate up`"
	case !v.Current():
		state = "not current: run `ordo migrate up`"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "ordo schema %d of %d, river schema %d of %d: %s\n", v.Ordo, v.Latest, v.River, v.LatestRvr, state)
	return nil
}
