package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Dir is a store in a directory: a local disk for one machine, or a file
// system that every worker mounts. Blobs live at sha256/<2 hex>/<digest>;
// a Put writes a temporary file beside them and renames it into place once
// its content is verified, so a blob's name always means its whole content.
type Dir struct {
	root string
}

// OpenDir opens (and creates) a directory store.
func OpenDir(root string) (*Dir, error) {
	if err := os.MkdirAll(filepath.Join(root, "sha256"), 0o755); err != nil {
		return nil, fmt.Errorf("blob store directory: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(root, "uploads"), 0o755); err != nil {
		return nil, fmt.Errorf("blob store directory: %w", err)
	}
	return &Dir{root: root}, nil
}

func (d *Dir) path(digest string) string {
	return filepath.Join(d.root, "sha256", digest[:2], digest)
}

func (d *Dir) Put(ctx context.Context, digest string, size int64, r io.Reader) error {
	if err := checkDigest(digest); err != nil {
		return err
	}
	// A blob already stored is touched instead: a prune deletes only blobs
	// stored before its grace period, and the event that names this one is
	// still to come. Gone meanwhile (a prune won): write it again.
	now := time.Now()
	if err := os.Chtimes(d.path(digest), now, now); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	tmp, err := os.CreateTemp(filepath.Join(d.root, "uploads"), digest[:12]+"-*")
	if err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	defer os.Remove(tmp.Name()) // gone after the rename, or on failure
	hr := newHashingReader(io.LimitReader(r, size+1))
	if _, err := io.Copy(tmp, contextReader{ctx, hr}); err != nil {
		tmp.Close()
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	if err := hr.check(digest, size); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	if err := os.MkdirAll(filepath.Dir(d.path(digest)), 0o755); err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	if err := os.Rename(tmp.Name(), d.path(digest)); err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	return nil
}

func (d *Dir) Get(ctx context.Context, digest string, off, n int64) (io.ReadCloser, error) {
	if err := checkDigest(digest); err != nil {
		return nil, err
	}
	f, err := os.Open(d.path(digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if off > 0 {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
	}
	if n < 0 {
		return f, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, n), f}, nil
}

func (d *Dir) Stat(ctx context.Context, digest string) (Blob, error) {
	if err := checkDigest(digest); err != nil {
		return Blob{}, err
	}
	fi, err := os.Stat(d.path(digest))
	if errors.Is(err, fs.ErrNotExist) {
		return Blob{}, fmt.Errorf("blob %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return Blob{}, err
	}
	return Blob{Digest: digest, Size: fi.Size(), CreatedAt: fi.ModTime()}, nil
}

func (d *Dir) Delete(ctx context.Context, digest string) error {
	if err := checkDigest(digest); err != nil {
		return err
	}
	if err := os.Remove(d.path(digest)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// DeleteIfBefore deletes a blob unless it was stored, or stored again,
// at or after before, and reports whether it deleted it. A Put that
// touches the blob meanwhile wins: the blob is moved aside first, kept
// (linked back) if its time is recent, and a Put that finds it moved
// aside writes it again.
func (d *Dir) DeleteIfBefore(ctx context.Context, digest string, before time.Time) (bool, error) {
	if err := checkDigest(digest); err != nil {
		return false, err
	}
	aside, err := os.CreateTemp(filepath.Join(d.root, "uploads"), "delete-"+digest[:12]+"-*")
	if err != nil {
		return false, fmt.Errorf("delete blob %s: %w", digest, err)
	}
	aside.Close()
	defer os.Remove(aside.Name())
	if err := os.Rename(d.path(digest), aside.Name()); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("delete blob %s: %w", digest, err)
	}
	fi, statErr := os.Stat(aside.Name())
	if statErr == nil && fi.ModTime().Before(before) {
		return true, nil
	}
	// a Put stored it again before the move (or its time is unknown): put
	// it back; a Put after the move has written it anew, the same content
	if err := os.Link(aside.Name(), d.path(digest)); err != nil && !errors.Is(err, fs.ErrExist) {
		return false, fmt.Errorf("delete blob %s: put back a blob stored again: %w", digest, err)
	}
	if statErr != nil {
		return false, fmt.Errorf("delete blob %s: %w", digest, statErr)
	}
	return false, nil
}

func (d *Dir) List(ctx context.Context, before time.Time, fn func(Blob) error) error {
	return filepath.WalkDir(filepath.Join(d.root, "sha256"), func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || !ValidDigest(e.Name()) {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		if !fi.ModTime().Before(before) {
			return nil
		}
		return fn(Blob{Digest: e.Name(), Size: fi.Size(), CreatedAt: fi.ModTime()})
	})
}

func (d *Dir) Close() error { return nil }

// contextReader stops reading when ctx ends.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
