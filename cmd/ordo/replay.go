package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/projections"
)

func newReplayCommand() *cobra.Command {
	var (
		url                  string
		verify, swap, dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "replay [--verify [--swap]] [--dry-run]",
		Short: "Rebuild every read model from the event log, then swap it in; with --verify, only check",
		Long: `Rebuild every read model (deployments, runs, task runs, attempts, state
history) from the first event of the log into fresh tables, while servers
keep serving the current ones, then swap them in atomically. Progress is
printed as it goes.

--verify is a check and changes nothing: it rebuilds into tables aside,
compares them with the live ones row by row, replays the whole log through
the domain's transition rules, reports, and throws the rebuilt tables away.
The command fails when anything differs or any event is not a legal
transition. --verify --swap also puts the rebuilt tables in place of the
live ones afterwards, whatever the comparison found.
--dry-run rebuilds and verifies without swapping (the same as --verify).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if swap && !verify {
				return domain.Invalid("swap", "--swap goes with --verify (a replay without --verify always swaps)")
			}
			if swap && dryRun {
				return domain.Invalid("swap", "--swap and --dry-run contradict each other")
			}
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
				DryRun: dryRun || verify && !swap,
				Progress: func(p projections.ReplayProgress) {
					fmt.Fprintln(out, p.String())
				},
			})
			if err != nil {
				return err
			}
			fmt.Fprint(out, replaySummary(res))
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
	cmd.Flags().BoolVar(&verify, "verify", false, flagHelp("verify", "only check: rebuild aside, compare with the live tables, validate every event, swap nothing"))
	cmd.Flags().BoolVar(&swap, "swap", false, flagHelp("swap", "with --verify: put the rebuilt tables in place of the live ones after the check"))
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, flagHelp("dry-run", "rebuild and verify, but keep the live tables"))
	return cmd
}

// replaySummary is the line a replay ends with: what it rebuilt and its one
// throughput figure, over the whole replay.
func replaySummary(res projections.ReplayResult) string {
	s := fmt.Sprintf("replayed %d events in %s: %.0f events/s over the whole replay", res.Events, res.Duration.Round(time.Millisecond), res.Rate())
	if res.Swapped {
		return s + "; the rebuilt read models are live\n"
	}
	return s + "; nothing swapped: the live read models were kept\n"
}
