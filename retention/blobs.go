package retention

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// blobPruner deletes the blobs that nothing names any more, batch by
// batch, each batch listed in a file and recorded as a BlobsDeleted event.
type blobPruner struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
	opts  Options
	res   *Result
	stamp string
	files int
}

// conditionalDeleter is a blob store that deletes a blob only if it was not
// stored again since a time, in one step, so that a Put racing with the
// delete wins. For other stores prune checks with Stat just before Delete.
type conditionalDeleter interface {
	DeleteIfBefore(ctx context.Context, digest string, before time.Time) (bool, error)
}

// DeletedBlob is one line of a blob list file: a blob that prune deleted.
type DeletedBlob struct {
	SHA256   string    `json:"sha256"`
	Size     int64     `json:"size"`
	StoredAt time.Time `json:"stored_at"` // when it was stored, or last stored again
}

// run deletes the blobs stored before now - BlobGrace that no event and no
// cached result names. dryRemoved lists the streams a dry run's archival
// would have removed: what only they name counts as deletable too.
//
// The cutoff is taken before the references are read. A blob stored after
// it is never a candidate; one stored before it, whose event commits after
// the read, is protected as long as its attempt took less than the grace
// period from storing it to recording its completion. A Put of a blob already stored
// refreshes its time, and the delete itself checks that time again.
func (p *blobPruner) run(ctx context.Context, dryRemoved []uuid.UUID) error {
	cutoff := time.Now().Add(-p.opts.BlobGrace)
	p.res.BlobsBefore = cutoff
	refs, err := p.referenced(ctx, dryRemoved)
	if err != nil {
		return err
	}
	var batch []blobstore.Blob
	err = p.opts.Blobs.List(ctx, cutoff, func(b blobstore.Blob) error {
		if refs.names(b.Digest) {
			p.res.BlobsKept++
			return nil
		}
		batch = append(batch, b)
		if len(batch) < p.opts.BatchBlobs {
			return nil
		}
		err := p.batch(ctx, batch, cutoff)
		batch = batch[:0]
		return err
	})
	if err == nil && len(batch) > 0 {
		err = p.batch(ctx, batch, cutoff)
	}
	if err != nil {
		return fmt.Errorf("prune blobs: %w", err)
	}
	return nil
}

// digestSet holds SHA-256 digests as 32 bytes each.
type digestSet map[[32]byte]struct{}

func (s digestSet) names(digest string) bool {
	var k [32]byte
	if n, err := hex.Decode(k[:], []byte(digest)); err != nil || n != 32 {
		return false
	}
	_, ok := s[k]
	return ok
}

// referenced reads the digests that the outputs of a completion or a cache
// hit in the log name (but for the streams in exclude), and those of the
// result cache's entries (a later hit reuses them even when the run that
// made them is archived). Both in one snapshot, so that a cache hit that
// commits after it read an entry is seen either in the log or through the
// entry. The transaction only reads, so it holds back no reader of the
// log.
func (p *blobPruner) referenced(ctx context.Context, exclude []uuid.UUID) (digestSet, error) {
	refs := digestSet{}
	add := func(d string) error {
		var k [32]byte
		if n, err := hex.Decode(k[:], []byte(d)); err == nil && n == 32 {
			refs[k] = struct{}{}
		}
		return nil
	}
	types := []string{domain.TaskRunCompleted{}.EventType(), domain.TaskRunCached{}.EventType()}
	err := pgx.BeginTxFunc(ctx, p.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := p.store.OutputDigests(ctx, tx, types, exclude, add); err != nil {
			return err
		}
		// through to_jsonb: before migration 0019 the table has no
		// outputs column, and names none
		rows, err := tx.Query(ctx, `SELECT DISTINCT jsonb_path_query(to_jsonb(c), '$.outputs[*].sha256') #>> '{}' FROM task_cache c`)
		if err != nil {
			return fmt.Errorf("read the digests the result cache names: %w", err)
		}
		var d string
		if _, err := pgx.ForEachRow(rows, []any{&d}, func() error { return add(d) }); err != nil {
			return fmt.Errorf("read the digests the result cache names: %w", err)
		}
		return nil
	})
	return refs, err
}

// batch deletes (or with DryRun counts) blobs, then lists the ones deleted
// in a file and records it. A blob stored again since the cutoff is kept.
func (p *blobPruner) batch(ctx context.Context, blobs []blobstore.Blob, cutoff time.Time) error {
	if p.opts.DryRun {
		for _, b := range blobs {
			p.res.Blobs++
			p.res.BlobBytes += b.Size
		}
		return nil
	}
	var deleted []DeletedBlob
	var err error
	for _, b := range blobs {
		var ok bool
		if ok, err = p.deleteIfBefore(ctx, b.Digest, cutoff); err != nil {
			break // record what is already deleted
		}
		if ok {
			deleted = append(deleted, DeletedBlob{SHA256: b.Digest, Size: b.Size, StoredAt: b.CreatedAt.UTC()})
		} else {
			p.res.BlobsKept++
		}
	}
	if len(deleted) > 0 {
		if rerr := p.record(ctx, deleted, cutoff); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
	return err
}

func (p *blobPruner) deleteIfBefore(ctx context.Context, digest string, cutoff time.Time) (bool, error) {
	if s, ok := p.opts.Blobs.(conditionalDeleter); ok {
		return s.DeleteIfBefore(ctx, digest, cutoff)
	}
	b, err := p.opts.Blobs.Stat(ctx, digest)
	if errors.Is(err, blobstore.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !b.CreatedAt.Before(cutoff) {
		return false, nil
	}
	return true, p.opts.Blobs.Delete(ctx, digest)
}

// record writes the list of deleted blobs, one JSON object per line, and
// appends the BlobsDeleted event that names it.
func (p *blobPruner) record(ctx context.Context, deleted []DeletedBlob, cutoff time.Time) error {
	p.files++
	path := filepath.Join(p.opts.ArchiveDir, fmt.Sprintf("ordo-blobs-%s-%04d.ndjson", p.stamp, p.files))
	var bytes int64
	for _, d := range deleted {
		bytes += d.Size
	}
	sum, err := writeDurably(path, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		for _, d := range deleted {
			if err := enc.Encode(d); err != nil {
				return err
			}
		}
		return nil
	})
	p.res.Blobs += len(deleted)
	p.res.BlobBytes += bytes
	if err != nil {
		return fmt.Errorf("%d blobs were deleted but their list could not be written: %w", len(deleted), err)
	}
	p.res.BlobFiles = append(p.res.BlobFiles, path)
	err = p.store.InTx(ctx, func(tx pgx.Tx) error {
		version, err := p.store.StreamVersion(ctx, tx, domain.RetentionStreamID)
		if err != nil {
			return err
		}
		_, err = p.store.Append(ctx, tx, eventstore.Append{
			StreamID: domain.RetentionStreamID, ExpectedVersion: version,
			Events:   []domain.Event{domain.BlobsDeleted{File: path, Count: len(deleted), Bytes: bytes, SHA256: sum, Before: cutoff.UTC()}},
			Metadata: domain.Metadata{Actor: p.opts.Actor, Reason: fmt.Sprintf("deleted %d blobs that nothing names, stored before %s", len(deleted), cutoff.UTC().Format(time.RFC3339))},
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("record the deleted blobs listed in %s: %w", path, err)
	}
	p.opts.Logger.Info("prune: deleted blobs", "blobs", len(deleted), "bytes", bytes, "file", path)
	return nil
}

// ReadBlobList reads a list of deleted blobs back, for tests and for
// people.
func ReadBlobList(path string) ([]DeletedBlob, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []DeletedBlob
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var d DeletedBlob
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			return nil, fmt.Errorf("read blob list %s: %w", path, err)
		}
		out = append(out, d)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read blob list %s: %w", path, err)
	}
	return out, nil
}
