// Package blobstore keeps the files tasks exchange (their outputs), each
// addressed by the SHA-256 of its content, so a blob is stored once however
// many tasks, runs or cache hits name it.
//
// Every backend streams: a blob is never held whole in memory. Put verifies
// the content against its digest while it writes and stores nothing that
// does not match, so a digest named in an event always names a whole blob.
// Get hands back the bytes; Verify checks them against the digest as they
// are read. The server and every worker open the same store (Open with the
// one URL in ORDO_BLOB_STORE): workers write and read blobs directly.
//
// It must never import jobs, commands, projections or api: it knows bytes
// and digests, not tasks.
package blobstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"
)

// Blob describes one stored blob.
type Blob struct {
	Digest    string    // SHA-256 of the content, lower-case hex
	Size      int64     // bytes
	CreatedAt time.Time // when it was stored, or last stored again (prune's grace period counts from it)
}

// Store is a content-addressed blob store.
type Store interface {
	// Put stores the size bytes read from r under digest. It checks the
	// content against digest and size while it streams, and when they do
	// not match it stores nothing and returns an error wrapping
	// ErrDigestMismatch. A blob already stored is not written again (its
	// bytes are still read from r and checked, unless the backend can tell
	// it has them without), but its CreatedAt becomes now: a prune must
	// not delete it before the event that will name it is written.
	Put(ctx context.Context, digest string, size int64, r io.Reader) error
	// Get streams n bytes of a blob from offset off; n < 0 reads to the
	// end. A blob not stored is ErrNotFound. The bytes are not verified:
	// wrap the reader with Verify when reading a whole blob.
	Get(ctx context.Context, digest string, off, n int64) (io.ReadCloser, error)
	// Stat describes a stored blob, or returns ErrNotFound.
	Stat(ctx context.Context, digest string) (Blob, error)
	// Delete removes a blob; deleting one not stored is not an error.
	Delete(ctx context.Context, digest string) error
	// List calls fn for every blob whose CreatedAt is before the given time.
	List(ctx context.Context, before time.Time, fn func(Blob) error) error
	// Close releases what the store holds (not a pool it was given).
	Close() error
}

// Errors every backend returns (wrapped).
var (
	ErrNotFound       = errors.New("blob not found")
	ErrDigestMismatch = errors.New("blob content does not match its digest")
)

// ValidDigest reports whether d is a SHA-256 digest in lower-case hex.
func ValidDigest(d string) bool {
	if len(d) != 64 {
		return false
	}
	for _, c := range []byte(d) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func checkDigest(d string) error {
	if !ValidDigest(d) {
		return fmt.Errorf("%q is not a SHA-256 digest in lower-case hex", d)
	}
	return nil
}

// Digest is the SHA-256 of everything read from r, and its size.
func Digest(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// PutFile stores a file: it reads it once for its digest and once to store
// it (the store verifies the second read against the first).
func PutFile(ctx context.Context, s Store, path string) (Blob, error) {
	f, err := os.Open(path)
	if err != nil {
		return Blob{}, err
	}
	defer f.Close()
	d, size, err := Digest(f)
	if err != nil {
		return Blob{}, fmt.Errorf("read %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Blob{}, err
	}
	if err := s.Put(ctx, d, size, f); err != nil {
		return Blob{}, err
	}
	return Blob{Digest: d, Size: size}, nil
}

// Verify wraps the reader of a whole blob: reading it returns an error
// wrapping ErrDigestMismatch at the end when the bytes do not hash to
// digest or their count is not size (size < 0: any count).
func Verify(rc io.ReadCloser, digest string, size int64) io.ReadCloser {
	return &verifier{rc: rc, h: sha256.New(), digest: digest, size: size}
}

type verifier struct {
	rc     io.ReadCloser
	h      hash.Hash
	digest string
	size   int64
	n      int64
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.rc.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if err == io.EOF {
		if v.size >= 0 && v.n != v.size {
			return n, fmt.Errorf("blob %s: read %d bytes, want %d: %w", v.digest, v.n, v.size, ErrDigestMismatch)
		}
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.digest {
			return n, fmt.Errorf("blob %s: content hashes to %s: %w", v.digest, got, ErrDigestMismatch)
		}
	}
	return n, err
}

func (v *verifier) Close() error { return v.rc.Close() }

// hashingReader hashes and counts what it reads, for a Put to check the
// content it stores.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func newHashingReader(r io.Reader) *hashingReader { return &hashingReader{r: r, h: sha256.New()} }

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

// check reports whether what was read matches digest and size.
func (h *hashingReader) check(digest string, size int64) error {
	if h.n != size {
		return fmt.Errorf("blob %s: got %d bytes, want %d: %w", digest, h.n, size, ErrDigestMismatch)
	}
	if got := hex.EncodeToString(h.h.Sum(nil)); got != digest {
		return fmt.Errorf("blob %s: content hashes to %s: %w", digest, got, ErrDigestMismatch)
	}
	return nil
}
