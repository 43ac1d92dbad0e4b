package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/projections/projtest"
	"github.com/ordoflow/ordo/retention"
)

// TestPruneCommand: ordo prune archives a finished run and leaves a
// running one, prints what it did, and `ordo replay --verify --dry-run`
// is clean afterwards.
func TestPruneCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, pool, proj, log := projectedLog(t)
	done := log.CreateRun(projtest.RunSpec{Name: "done"})
	done.Complete()
	running := log.CreateRun(projtest.RunSpec{Name: "running"})
	running.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
	if _, err := proj.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	dir := filepath.Join(t.TempDir(), "archive")
	blobDir := t.TempDir()
	blobs, err := blobstore.OpenDir(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(t.TempDir(), "orphan.bin")
	if err := os.WriteFile(orphan, []byte("an upload no completion names"), 0o644); err != nil {
		t.Fatal(err)
	}
	stored, err := blobstore.PutFile(ctx, blobs, orphan)
	if err != nil {
		t.Fatal(err)
	}
	longAgo := time.Now().Add(-3 * time.Hour)
	if err := os.Chtimes(filepath.Join(blobDir, "sha256", stored.Digest[:2], stored.Digest), longAgo, longAgo); err != nil {
		t.Fatal(err)
	}
	blobFlags := []string{"--blob-store", "file://" + blobDir, "--blob-grace", "2h"}

	// a blob store that cannot be opened fails the command before it prunes
	_, _, err = execute(t, newPruneCommand, "--older-than", "1s", "--archive-dir", dir, "--blob-store", "nope://x", "--database-url", url)
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "blob store") {
		t.Fatalf("prune with a bad blob store: %v (exit %d), want 2", err, exitCode(err))
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("a prune that failed to open the blob store made the archive directory: %v", err)
	}

	out, _, err := execute(t, newPruneCommand, append([]string{"--older-than", "1s", "--archive-dir", dir, "--dry-run", "--database-url", url}, blobFlags...)...)
	if err != nil || !strings.Contains(out, "flow runs: 1 would be archived") || !strings.Contains(out, "that nothing names: 1 (29 bytes) would be deleted (dry run)") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("a dry run made the archive directory: %v", err)
	}
	out, _, err = execute(t, newPruneCommand, append([]string{"--older-than", "1s", "--archive-dir", dir, "--database-url", url}, blobFlags...)...)
	if err != nil || !strings.Contains(out, "flow runs: 1 archived and removed (") || !strings.Contains(out, "archive: "+dir) ||
		!strings.Contains(out, "that nothing names: 1 (29 bytes) deleted") || !strings.Contains(out, "list of deleted blobs: "+dir) {
		t.Fatalf("prune: %v\n%s", err, out)
	}
	if _, err := blobs.Stat(ctx, stored.Digest); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("the blob nothing names: %v, want it deleted", err)
	}
	t.Logf("ordo prune:\n%s", out)
	files, _ := filepath.Glob(filepath.Join(dir, "ordo-events-*.ndjson.gz"))
	if len(files) != 1 {
		t.Fatalf("archive files: %v", files)
	}
	events, err := retention.ReadArchive(files[0])
	if err != nil || len(events) == 0 || events[0].StreamID != done.ID || events[0].Type != "FlowRunCreated" {
		t.Fatalf("archive: %d events, %v", len(events), err)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM flow_runs WHERE id = $1`, running.ID).Scan(&left); err != nil || left != 1 {
		t.Fatalf("the running run: %d rows (%v)", left, err)
	}

	out, _, err = execute(t, newPruneCommand, "--older-than", "1s", "--database-url", url)
	if err != nil || !strings.Contains(out, "events and blobs: kept") {
		t.Fatalf("without --archive-dir: %v\n%s", err, out)
	}
	out, _, err = execute(t, newReplayCommand, "--verify", "--dry-run", "--database-url", url)
	if err != nil {
		t.Fatalf("replay --verify after prune: %v\n%s", err, out)
	}
	for _, args := range [][]string{{}, {"--older-than", "soon"}, {"--older-than", "-3d"}, {"--older-than", "0s"}, {"--older-than", "1d", "--blob-grace", "10s"}} {
		_, _, err := execute(t, newPruneCommand, append(args, "--database-url", url)...)
		if exitCode(err) != 2 {
			t.Errorf("prune %v: %v (exit %d), want 2", args, err, exitCode(err))
		}
	}
}

func TestParseAge(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"30d": 30 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "1.5d": 36 * time.Hour, "12h": 12 * time.Hour, "90m": 90 * time.Minute} {
		if got, err := parseAge(in); err != nil || got != want {
			t.Errorf("parseAge(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "0d", "-1d", "30", "30x", "1e9d", "NaNd"} {
		if _, err := parseAge(in); err == nil {
			t.Errorf("parseAge(%q) accepted", in)
		}
	}
}
