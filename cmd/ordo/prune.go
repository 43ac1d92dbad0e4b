package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/retention"
)

func newPruneCommand() *cobra.Command {
	var (
		url, olderThan, archiveDir, blobStore string
		dryRun                                bool
		batchRuns                             int
		blobGrace                             time.Duration
	)
	cmd := &cobra.Command{
		Use:   "prune --older-than 30d [--archive-dir DIR] [--dry-run]",
		Short: "Delete old logs and River jobs; archive and remove the events of old finished runs and the blobs nothing names",
		Long: `Remove what finished longer ago than --older-than (30d, 12h, 90m...):

  - the task log lines of finished flow runs,
  - River's completed, cancelled and discarded job rows,
  - the HTTP API's stored responses to idempotent requests,
  - with --archive-dir, the events of finished flow runs (with their task
    runs, and sub-flow runs together with their parent): each batch is first
    written to DIR/ordo-events-TIME-N.ndjson.gz (gzipped, one event per
    line, synced to disk), then removed from the log and from the read
    models in one transaction, which records an EventsArchived event naming
    the file, its SHA-256 and the runs. Without --archive-dir the event log
    is kept whole.
  - with --archive-dir, then, the blobs of the blob store (--blob-store)
    that no event left in the log and no cached result names, stored (or
    stored again) longer ago than --blob-grace: each batch is deleted,
    listed in DIR/ordo-blobs-TIME-N.ndjson (sha256, size, stored_at per
    line) and recorded as a BlobsDeleted event with the file's SHA-256.
    The grace period protects uploads in flight, whose completion is not
    in the log yet: keep it longer than the longest upload of one
    attempt's outputs (stored after the task exits). A store that cannot
    be opened fails the command before anything is pruned.

The events table refuses every other change. While a batch is removed,
appends wait (at most a few seconds); a run that receives an event while
it is being archived is left for a later prune. A running replay and prune
exclude each other. Read models stay equal to a replay (ordo replay
--verify). --dry-run counts and changes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if olderThan == "" {
				return domain.Invalid("older-than", "required: how old finished runs must be to be pruned, such as 30d")
			}
			age, err := parseAge(olderThan)
			if err != nil {
				return err
			}
			if blobGrace < time.Minute {
				return domain.Invalid("blob-grace", "must be at least 1m: it protects outputs whose completion is not recorded yet, got %s", blobGrace)
			}
			pool, err := openPool(cmd.Context(), url)
			if err != nil {
				return err
			}
			defer pool.Close()
			var blobs blobstore.Store
			if archiveDir != "" {
				if blobs, err = blobstore.Open(cmd.Context(), blobStore, pool); err != nil {
					return domain.Invalid("blob-store", "cannot open the blob store to prune: %v", err)
				}
				defer blobs.Close()
			}
			store := eventstore.New(pool, domain.NewRegistry())
			defer store.Close()
			before := time.Now().Add(-age).UTC()
			out := cmd.OutOrStdout()
			verb := "deleted"
			if dryRun {
				verb = "would be deleted (dry run)"
			}
			fmt.Fprintf(out, "pruning what finished before %s (%s ago)\n", before.Format(time.RFC3339), olderThan)
			res, err := retention.Prune(cmd.Context(), pool, store, retention.Options{
				Before: before, ArchiveDir: archiveDir, DryRun: dryRun, BatchRuns: batchRuns,
				Blobs: blobs, BlobGrace: blobGrace,
				Logger: newLogger(cmd.ErrOrStderr()),
			})
			fmt.Fprintf(out, "task log lines: %d %s\n", res.LogLines, verb)
			fmt.Fprintf(out, "River jobs: %d %s\n", res.RiverJobs, verb)
			fmt.Fprintf(out, "stored idempotent responses: %d %s\n", res.IdempotencyKeys, verb)
			switch {
			case archiveDir == "":
				fmt.Fprintln(out, "events and blobs: kept (give --archive-dir to archive and remove the events of finished runs and delete the blobs nothing names)")
			case dryRun:
				fmt.Fprintf(out, "flow runs: %d would be archived to %s and removed (%d events)\n", res.Runs, archiveDir, res.Events)
			default:
				fmt.Fprintf(out, "flow runs: %d archived and removed (%d events)\n", res.Runs, res.Events)
				for _, f := range res.Files {
					fmt.Fprintf(out, "  archive: %s\n", f)
				}
			}
			if !res.BlobsBefore.IsZero() {
				fmt.Fprintf(out, "blobs stored before %s that nothing names: %d (%d bytes) %s; %d older ones kept (named, or stored again)\n",
					res.BlobsBefore.UTC().Format(time.RFC3339), res.Blobs, res.BlobBytes, verb, res.BlobsKept)
				for _, f := range res.BlobFiles {
					fmt.Fprintf(out, "  list of deleted blobs: %s\n", f)
				}
			}
			if res.Skipped > 0 {
				fmt.Fprintf(out, "left for a later prune: %d finished flow runs\n", res.Skipped)
				for _, s := range res.Skips {
					fmt.Fprintf(out, "  %s\n", s)
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&url, "database-url", "", flagHelp("database-url", "PostgreSQL connection URL; also read from DATABASE_URL"))
	cmd.Flags().StringVar(&olderThan, "older-than", "", flagHelp("older-than", "prune what finished longer ago than this: 30d, 12h, 90m"))
	cmd.Flags().StringVar(&archiveDir, "archive-dir", "", flagHelp("archive-dir", "archive the events of finished runs here, then remove them from the log"))
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, flagHelp("dry-run", "count what would be pruned; change nothing"))
	cmd.Flags().IntVar(&batchRuns, "batch-runs", 500, flagHelp("batch-runs", "flow runs per archive file and transaction"))
	cmd.Flags().StringVar(&blobStore, "blob-store", "", flagHelp("blob-store", "the blob store to prune, as the workers have it: postgres (the default), file:///path or s3://bucket/prefix"))
	cmd.Flags().DurationVar(&blobGrace, "blob-grace", time.Hour, flagHelp("blob-grace", "delete only blobs stored longer ago than this (at least 1m): longer than the longest upload of one attempt's outputs"))
	return cmd
}

// parseAge reads a duration that may also be given in days ("30d") or
// weeks ("2w").
func parseAge(s string) (time.Duration, error) {
	bad := domain.Invalid("older-than", "must be a positive duration such as 30d, 2w, 12h or 90m, got %q", s)
	var d time.Duration
	switch {
	case strings.HasSuffix(s, "d"), strings.HasSuffix(s, "w"):
		n, err := strconv.ParseFloat(strings.TrimRight(s, "dw"), 64)
		if err != nil {
			return 0, bad
		}
		unit := 24 * time.Hour
		if strings.HasSuffix(s, "w") {
			unit *= 7
		}
		if n <= 0 || n > 100*365 {
			return 0, bad
		}
		d = time.Duration(n * float64(unit))
	default:
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, bad
		}
	}
	if d <= 0 {
		return 0, bad
	}
	return d, nil
}
