package retention_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/projections"
	"github.com/ordoflow/ordo/projections/projtest"
	"github.com/ordoflow/ordo/retention"
)

// racingStore stands between prune and a directory store: once armed, it
// stores a blob again right after List offers it to prune, as a task
// that finishes with the same output would, before prune deletes it.
type racingStore struct {
	blobstore.Store
	armed   bool
	again   string
	content []byte
}

func (s *racingStore) List(ctx context.Context, before time.Time, fn func(blobstore.Blob) error) error {
	return s.Store.List(ctx, before, func(b blobstore.Blob) error {
		if s.armed && b.Digest == s.again {
			if err := s.Put(ctx, b.Digest, int64(len(s.content)), bytes.NewReader(s.content)); err != nil {
				return err
			}
		}
		return fn(b)
	})
}

// conditionalStore is a racingStore whose store deletes conditionally.
type conditionalStore struct {
	*racingStore
	dir *blobstore.Dir
}

func (s conditionalStore) DeleteIfBefore(ctx context.Context, digest string, before time.Time) (bool, error) {
	return s.dir.DeleteIfBefore(ctx, digest, before)
}

type blobFixture struct {
	root  string
	store *blobstore.Dir
}

func (f blobFixture) put(t *testing.T, content string, age time.Duration) domain.Output {
	t.Helper()
	sum := sha256.Sum256([]byte(content))
	d := hex.EncodeToString(sum[:])
	if err := f.store.Put(context.Background(), d, int64(len(content)), bytes.NewReader([]byte(content))); err != nil {
		t.Fatal(err)
	}
	if age > 0 {
		at := time.Now().Add(-age)
		if err := os.Chtimes(filepath.Join(f.root, "sha256", d[:2], d), at, at); err != nil {
			t.Fatal(err)
		}
	}
	return domain.Output{Name: content + ".bin", SHA256: d, Size: int64(len(content)), MediaType: "application/octet-stream"}
}

func (f blobFixture) stored(t *testing.T, o domain.Output) bool {
	t.Helper()
	_, err := f.store.Stat(context.Background(), o.SHA256)
	if err != nil && !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// completeWithOutputs runs the diamond to completion, each task leaving
// the outputs given for it.
func completeWithOutputs(r *projtest.Run, outs map[string][]domain.Output) {
	r.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
	for _, n := range []string{"load", "left", "right", "join"} {
		r.Task(n, domain.TaskRunStarted{Attempt: 1, Worker: "w1"}, domain.TaskRunCompleted{Attempt: 1, Outputs: outs[n]})
	}
	r.Flow(domain.FlowRunCompleted{})
}

// TestPruneDeletesBlobsNothingNames: after archiving old runs, prune
// deletes the blobs older than the grace period that no event left in the
// log and no cached result names (those of the runs it just archived, and
// orphans), keeps the rest (named by a completion, a cache hit or a cache
// entry; stored within the grace period; stored again while prune runs),
// lists what it deleted in a file recorded as a BlobsDeleted event, and a
// dry run counts the same and changes nothing. Once with a store that
// deletes conditionally, once with one that only has Stat and Delete.
func TestPruneDeletesBlobsNothingNames(t *testing.T) {
	t.Parallel()
	for _, conditional := range []bool{true, false} {
		name := "StatThenDelete"
		if conditional {
			name = "DeleteIfBefore"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testPruneBlobs(t, conditional)
		})
	}
}

func testPruneBlobs(t *testing.T, conditional bool) {
	b := setup(t)
	ctx := context.Background()
	root := t.TempDir()
	dir, err := blobstore.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	f := blobFixture{root: root, store: dir}
	old := 2 * time.Hour
	var (
		namedByRun      = f.put(t, "named by a running run", old)
		namedByCacheHit = f.put(t, "named by a cache hit", old)
		namedByEntry    = f.put(t, "named by a cache entry", old)
		archived        = f.put(t, "named only by an archived run", old)
		orphan          = f.put(t, "named by nothing", old)
		inFlight        = f.put(t, "stored, its completion still to come", 0)
		storedAgain     = f.put(t, "stored again while prune runs", old)
	)
	racing := &racingStore{Store: dir, again: storedAgain.SHA256, content: []byte("stored again while prune runs")}
	var store blobstore.Store = racing
	if conditional {
		store = conditionalStore{racingStore: racing, dir: dir}
	}

	oldRun := b.log.CreateRun(projtest.RunSpec{Name: "old"})
	completeWithOutputs(oldRun, map[string][]domain.Output{"load": {archived}, "join": {archived, namedByRun}})
	running := b.log.CreateRun(projtest.RunSpec{Name: "running"})
	running.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
	running.Task("load", domain.TaskRunStarted{Attempt: 1, Worker: "w1"}, domain.TaskRunCompleted{Attempt: 1, Outputs: []domain.Output{namedByRun}})
	running.Task("left", domain.TaskRunCached{CacheKey: "k1", SourceTaskRunID: uuid.New(), Outputs: []domain.Output{namedByCacheHit}})
	// the result cache names outputs from migration 0019 on; before it,
	// prune must read the table as naming none
	if _, err := b.pool.Exec(ctx, `ALTER TABLE task_cache ADD COLUMN IF NOT EXISTS outputs jsonb`); err != nil {
		t.Fatal(err)
	}
	entry, _ := json.Marshal([]domain.Output{namedByEntry})
	if _, err := b.pool.Exec(ctx, `INSERT INTO task_cache (cache_key, task_run_id, outputs) VALUES ('k2', $1, $2)`, uuid.New(), entry); err != nil {
		t.Fatal(err)
	}
	b.sync(t)
	time.Sleep(20 * time.Millisecond)
	cutoff := time.Now()
	time.Sleep(20 * time.Millisecond)
	archiveDir := t.TempDir()
	opts := retention.Options{Before: cutoff, ArchiveDir: archiveDir, Blobs: store, BlobGrace: time.Hour, BatchBlobs: 1}
	all := []domain.Output{namedByRun, namedByCacheHit, namedByEntry, archived, orphan, inFlight, storedAgain}

	// a dry run counts the blobs the archival would free too, and changes
	// nothing
	dryOpts := opts
	dryOpts.DryRun = true
	dry, err := retention.Prune(ctx, b.pool, b.store, dryOpts)
	if err != nil {
		t.Fatal(err)
	}
	wantDry := archived.Size + orphan.Size + storedAgain.Size
	if dry.Runs != 1 || dry.Blobs != 3 || dry.BlobBytes != wantDry || dry.BlobsKept != 3 || len(dry.BlobFiles) != 0 {
		t.Fatalf("dry run: %+v; want 1 run, 3 blobs of %d bytes, 3 kept", dry, wantDry)
	}
	for _, o := range all {
		if !f.stored(t, o) {
			t.Fatalf("a dry run deleted %s", o.Name)
		}
	}
	if entries, _ := os.ReadDir(archiveDir); len(entries) != 0 {
		t.Fatalf("a dry run wrote %v", entries)
	}

	racing.armed = true
	res, err := retention.Prune(ctx, b.pool, b.store, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("prune: %+v", res)
	if res.Runs != 1 || res.Blobs != 2 || res.BlobBytes != archived.Size+orphan.Size || res.BlobsKept != 4 || len(res.BlobFiles) != 2 {
		t.Fatalf("prune: %+v; want 1 run archived, 2 blobs deleted in 2 files, 4 kept", res)
	}
	for _, o := range all {
		gone := o == archived || o == orphan
		if f.stored(t, o) == gone {
			t.Errorf("%s: stored %v, want %v", o.Name, !gone, !gone)
		}
	}

	// the lists name exactly what was deleted, each recorded with its hash
	var listed []string
	for _, file := range res.BlobFiles {
		lines, err := retention.ReadBlobList(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			listed = append(listed, l.SHA256)
			if (l.SHA256 == orphan.SHA256 && l.Size != orphan.Size) || (l.SHA256 == archived.SHA256 && l.Size != archived.Size) || l.StoredAt.After(cutoff) {
				t.Errorf("list line %+v", l)
			}
		}
	}
	slices.Sort(listed)
	want := []string{archived.SHA256, orphan.SHA256}
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Errorf("the lists name %v, want %v", listed, want)
	}
	recs, err := b.store.ReadStream(ctx, b.pool, domain.RetentionStreamID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var deleted []domain.BlobsDeleted
	for _, env := range recs {
		if e, ok := env.Event.(domain.BlobsDeleted); ok {
			deleted = append(deleted, e)
		}
	}
	if len(deleted) != 2 {
		t.Fatalf("%d BlobsDeleted records, want 2: %+v", len(deleted), recs)
	}
	var bytesRecorded int64
	for i, e := range deleted {
		raw, err := os.ReadFile(e.File)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(raw)
		if e.File != res.BlobFiles[i] || e.Count != 1 || e.SHA256 != hex.EncodeToString(sum[:]) || e.Before.After(time.Now().Add(-time.Hour)) {
			t.Errorf("record %d: %+v", i, e)
		}
		bytesRecorded += e.Bytes
	}
	if bytesRecorded != res.BlobBytes {
		t.Errorf("records: %d bytes, deleted %d", bytesRecorded, res.BlobBytes)
	}

	// the upload in flight completes: its blob is there; the records
	// project and replay cleanly
	running.Task("right", domain.TaskRunStarted{Attempt: 1, Worker: "w1"}, domain.TaskRunCompleted{Attempt: 1, Outputs: []domain.Output{inFlight}})
	b.sync(t)
	rc, err := dir.Get(ctx, inFlight.SHA256, 0, -1)
	if err != nil {
		t.Fatalf("the blob of the completion in flight: %v", err)
	}
	rc.Close()
	report, err := projections.Verify(ctx, b.pool, b.store, projections.ReplayOptions{})
	if err != nil || !report.OK() {
		t.Fatalf("after prune: %v\n%s", err, report.String())
	}

	racing.armed = false
	again, err := retention.Prune(ctx, b.pool, b.store, opts)
	if err != nil || again.Blobs != 0 || len(again.BlobFiles) != 0 {
		t.Fatalf("second prune: %+v %v", again, err)
	}
}
