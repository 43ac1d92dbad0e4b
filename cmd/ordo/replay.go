package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/projections"
)

func newReplayCommand() *cobra.Command {
	var (
		url            string
		verify, dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "replay [--verify] [--dry-run]",
		Short: "Rebuild every read model from the event log, then swap it in",
		Long: `Rebuild every read model (deployments, runs, task runs, attempts, state
history) from the first event of the log into fresh tables, while servers
keep serving the current ones, then swap them in atomically. Progress is
printed as it goes.

--verify compares the rebuilt tables with the live ones row by row and
replays the whole log through the domain's transition rules; the command
fails when anything differs or any event is not a legal transition.
--dry-run builds (and verifies) without swapping.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pool, err := openPool(cmd.Context(), url)
			if err != nil {
				return err
			}
			defer pool.Close()
			store := eventstore.New(pool, domain.NewRegistry())
			defer store.Close()
			out := cmd.OutOrStdout()
			res, err := projections.Replay(cmd.Context(), pool, store, projections.ReplayOptions{
				Verify: verify || dryRun,
				DryRun: dryRun,
				Progress: func(p projections.ReplayProgress) {
					fmt.Fprintln(out, p.String())
				},
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "rebuilt from %d events in %s (%.0f events/s)", res.Events, res.Duration.Round(1e6), res.Rate())
			if res.Swapped {
				fmt.Fprintln(out, "; the rebuilt read models are live")
			} else {
				fmt.Fprintln(out, "; dry run: the live read models were kept")
			}
			if res.Verify != nil {
				fmt.Fprint(out, res.Verify.String())
				if !res.Verify.OK() {
					return &exitError{code: 1, err: errors.New("verify found differences or illegal events")}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "database-url", "", flagHelp("database-url", "PostgreSQL connection URL; also read from DATABASE_URL"))
	cmd.Flags().BoolVar(&verify, "verify", false, flagHelp("verify", "compare the rebuilt tables with the live ones and validate every event"))
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, flagHelp("dry-run", "rebuild and verify, but keep the live tables"))
	return cmd
}
