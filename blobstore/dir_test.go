package blobstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ordoflow/ordo/blobstore"
)

func putBytes(t *testing.T, s blobstore.Store, b []byte) string {
	t.Helper()
	sum := sha256.Sum256(b)
	d := hex.EncodeToString(sum[:])
	if err := s.Put(context.Background(), d, int64(len(b)), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	return d
}

// age sets a stored blob's time back, as if it was stored long ago.
func age(t *testing.T, root, digest string, at time.Time) {
	t.Helper()
	if err := os.Chtimes(filepath.Join(root, "sha256", digest[:2], digest), at, at); err != nil {
		t.Fatal(err)
	}
}

func listed(t *testing.T, s blobstore.Store, before time.Time) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	if err := s.List(context.Background(), before, func(b blobstore.Blob) error { out[b.Digest] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDirPutOfAStoredBlobRefreshesIt: a Put of a blob already stored makes
// it recent again, so that a prune's List no longer offers it.
func TestDirPutOfAStoredBlobRefreshesIt(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, err := blobstore.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	d := putBytes(t, s, []byte("model bytes"))
	old := time.Now().Add(-2 * time.Hour)
	age(t, root, d, old)
	cutoff := time.Now().Add(-time.Hour)
	if !listed(t, s, cutoff)[d] {
		t.Fatal("an old blob is not listed")
	}
	before := time.Now()
	putBytes(t, s, []byte("model bytes"))
	if listed(t, s, cutoff)[d] {
		t.Fatal("a blob stored again is still listed as old")
	}
	if b, err := s.Stat(context.Background(), d); err != nil || b.CreatedAt.Before(before.Add(-time.Second)) {
		t.Fatalf("stat after a second Put: %+v %v, want a time after %s", b, err, before)
	}
}

// TestDirDeleteIfBefore: an old blob is deleted; one stored again since is
// kept, whole; a missing one is no error.
func TestDirDeleteIfBefore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	root := t.TempDir()
	s, err := blobstore.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	oldBlob := putBytes(t, s, []byte("old"))
	freshBlob := putBytes(t, s, []byte("fresh"))
	age(t, root, oldBlob, time.Now().Add(-2*time.Hour))
	age(t, root, freshBlob, time.Now().Add(-2*time.Hour))
	cutoff := time.Now().Add(-time.Hour)
	putBytes(t, s, []byte("fresh")) // stored again after the prune listed it

	if ok, err := s.DeleteIfBefore(ctx, oldBlob, cutoff); err != nil || !ok {
		t.Fatalf("old blob: deleted %v, %v", ok, err)
	}
	if _, err := s.Stat(ctx, oldBlob); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("old blob after delete: %v", err)
	}
	if ok, err := s.DeleteIfBefore(ctx, freshBlob, cutoff); err != nil || ok {
		t.Fatalf("blob stored again: deleted %v, %v", ok, err)
	}
	rc, err := s.Get(ctx, freshBlob, 0, -1)
	if err != nil {
		t.Fatalf("blob stored again is gone: %v", err)
	}
	var got bytes.Buffer
	_, err = got.ReadFrom(blobstore.Verify(rc, freshBlob, 5))
	rc.Close()
	if err != nil || got.String() != "fresh" {
		t.Fatalf("blob stored again: %q %v", got.String(), err)
	}
	if ok, err := s.DeleteIfBefore(ctx, oldBlob, cutoff); err != nil || ok {
		t.Fatalf("missing blob: deleted %v, %v", ok, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "uploads")); len(entries) != 0 {
		t.Fatalf("files left in uploads: %v", entries)
	}
}
