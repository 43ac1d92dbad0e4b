package blobstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/internal/seaweed"
)

func TestMain(m *testing.M) {
	code := m.Run()
	seaweed.StopShared()
	os.Exit(code)
}

// backend is one implementation under the conformance suite.
type backend struct {
	name string
	open func(t *testing.T) blobstore.Store
	// buffers is what the backend holds in memory while it moves a blob:
	// the bound of the large-blob test is derived from it.
	buffers int64
	// big is the size of a blob that takes the backend's multi-chunk or
	// multipart path.
	big int64
}

// s3PartSize is the smallest part S3 allows, so that the tests' blobs go
// through multipart uploads without being large.
const s3PartSize = 5 << 20

func backends() []backend {
	return []backend{
		{name: "Dir", open: func(t *testing.T) blobstore.Store {
			s, err := blobstore.OpenDir(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		}, buffers: 64 << 10, big: 3 << 20},
		{name: "Postgres", open: func(t *testing.T) blobstore.Store {
			return blobstore.NewPostgres(pgtest.Pool(t))
		}, buffers: postgresBuffers, big: 3*blobstore.ChunkSize + 17},
		{name: "S3", open: func(t *testing.T) blobstore.Store {
			return openS3(t, blobstore.S3Config{PartSize: s3PartSize, Parallel: 2})
		}, buffers: 2 * s3PartSize, big: 2*s3PartSize + 17},
	}
}

// postgresBuffers: a Put holds the chunk it reads and pgx's copy of it
// being sent; a Get holds the chunks of one query and pgx's buffer of the
// row being read.
const postgresBuffers = 2*blobstore.ChunkSize + (4+1)*blobstore.ChunkSize

// openS3 opens a store on the package's SeaweedFS under a prefix of the
// test's own.
func openS3(t *testing.T, cfg blobstore.S3Config) *blobstore.S3 {
	t.Helper()
	srv := seaweed.Shared(t)
	cfg.Bucket, cfg.Prefix = seaweed.TestBucket, fmt.Sprintf("t/%s-%d", t.Name(), rand.Uint64())
	cfg.Endpoint, cfg.AccessKeyID, cfg.SecretAccessKey = srv.Endpoint, srv.AccessKey, srv.SecretKey
	cfg.Region = "us-east-1"
	s, err := blobstore.OpenS3(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// blob is test content made up on the fly from a seed, never held whole.
type blob struct {
	seed   uint64
	size   int64
	digest string
}

func newBlob(t testing.TB, seed uint64, size int64) blob {
	t.Helper()
	d, n, err := blobstore.Digest(blob{seed: seed, size: size}.reader())
	if err != nil || n != size {
		t.Fatalf("digest: %v (%d bytes)", err, n)
	}
	return blob{seed: seed, size: size, digest: d}
}

func (b blob) reader() io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{byte(b.seed), byte(b.seed >> 8), byte(b.seed >> 16)}), b.size)
}

func (b blob) bytes(t testing.TB) []byte {
	t.Helper()
	if b.size > 64<<20 {
		t.Fatalf("blob of %d bytes is too large to compare in memory", b.size)
	}
	p, err := io.ReadAll(b.reader())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func put(t *testing.T, s blobstore.Store, b blob) {
	t.Helper()
	if err := s.Put(t.Context(), b.digest, b.size, b.reader()); err != nil {
		t.Fatalf("put: %v", err)
	}
}

func read(t *testing.T, s blobstore.Store, digest string, off, n int64) []byte {
	t.Helper()
	rc, err := s.Get(t.Context(), digest, off, n)
	if err != nil {
		t.Fatalf("get %d+%d: %v", off, n, err)
	}
	defer rc.Close()
	p, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %d+%d: %v", off, n, err)
	}
	return p
}

// stored reports whether the store has the blob, by Stat, Get and List.
func stored(t *testing.T, s blobstore.Store, digest string) bool {
	t.Helper()
	_, statErr := s.Stat(t.Context(), digest)
	rc, getErr := s.Get(t.Context(), digest, 0, -1)
	if getErr == nil {
		rc.Close()
	}
	listed := false
	if err := s.List(t.Context(), time.Now().Add(time.Hour), func(b blobstore.Blob) error {
		listed = listed || b.Digest == digest
		return nil
	}); err != nil {
		t.Fatalf("list: %v", err)
	}
	for _, err := range []error{statErr, getErr} {
		if err != nil && !errors.Is(err, blobstore.ErrNotFound) {
			t.Fatalf("stat or get: %v, want ErrNotFound or nothing", err)
		}
	}
	if (statErr == nil) != listed || (getErr == nil) != listed {
		t.Fatalf("stat says %v, get says %v, list says %v", statErr, getErr, listed)
	}
	return listed
}

// TestStoreConformance runs every backend through what the Store
// interface promises.
func TestStoreConformance(t *testing.T) {
	t.Parallel()
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			s := be.open(t)
			t.Run("PutGetStatListDelete", func(t *testing.T) {
				t.Parallel()
				started := time.Now().Add(-time.Second)
				small, large, empty := newBlob(t, 1, 1000), newBlob(t, 2, be.big), newBlob(t, 3, 0)
				for _, b := range []blob{small, large, empty} {
					put(t, s, b)
					if got := read(t, s, b.digest, 0, -1); !bytes.Equal(got, b.bytes(t)) {
						t.Fatalf("blob of %d bytes read back as %d different bytes", b.size, len(got))
					}
					st, err := s.Stat(t.Context(), b.digest)
					if err != nil || st.Digest != b.digest || st.Size != b.size || st.CreatedAt.Before(started) || st.CreatedAt.After(time.Now().Add(time.Second)) {
						t.Fatalf("stat = %+v, %v; want digest %s, size %d, created now", st, err, b.digest, b.size)
					}
					rc, err := s.Get(t.Context(), b.digest, 0, -1)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := io.Copy(io.Discard, blobstore.Verify(rc, b.digest, b.size)); err != nil {
						t.Fatalf("verify what was stored: %v", err)
					}
					rc.Close()
				}
				listed := map[string]int64{}
				if err := s.List(t.Context(), time.Now().Add(time.Hour), func(b blobstore.Blob) error {
					listed[b.Digest] = b.Size
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				for _, b := range []blob{small, large, empty} {
					if size, ok := listed[b.digest]; !ok || size != b.size {
						t.Errorf("list: %s is %v with size %d, want listed with %d", b.digest, ok, size, b.size)
					}
				}
				if err := s.List(t.Context(), started.Add(-time.Hour), func(b blobstore.Blob) error {
					return fmt.Errorf("listed %s, stored after the time asked", b.Digest)
				}); err != nil {
					t.Error(err)
				}
				stop := errors.New("stop")
				if err := s.List(t.Context(), time.Now().Add(time.Hour), func(blobstore.Blob) error { return stop }); !errors.Is(err, stop) {
					t.Errorf("list returned %v, want the error of fn", err)
				}
				for _, b := range []blob{small, large} {
					if err := s.Delete(t.Context(), b.digest); err != nil {
						t.Fatal(err)
					}
					if stored(t, s, b.digest) {
						t.Errorf("blob %s is still stored after Delete", b.digest)
					}
					if err := s.Delete(t.Context(), b.digest); err != nil {
						t.Errorf("deleting a blob not stored: %v, want nil", err)
					}
				}
			})
			t.Run("NotFound", func(t *testing.T) {
				t.Parallel()
				missing := newBlob(t, 4, 10).digest
				if _, err := s.Stat(t.Context(), missing); !errors.Is(err, blobstore.ErrNotFound) {
					t.Errorf("stat: %v, want ErrNotFound", err)
				}
				if _, err := s.Get(t.Context(), missing, 0, -1); !errors.Is(err, blobstore.ErrNotFound) {
					t.Errorf("get: %v, want ErrNotFound", err)
				}
				if _, err := s.Get(t.Context(), missing, 5, 2); !errors.Is(err, blobstore.ErrNotFound) {
					t.Errorf("get a range: %v, want ErrNotFound", err)
				}
				for _, bad := range []string{"", "abc", "ABCDEF" + missing[6:], missing + "0"} {
					if err := s.Put(t.Context(), bad, 0, bytes.NewReader(nil)); err == nil {
						t.Errorf("put under %q: nil, want an error", bad)
					}
					if _, err := s.Stat(t.Context(), bad); err == nil || errors.Is(err, blobstore.ErrNotFound) {
						t.Errorf("stat %q: %v, want an error about the digest", bad, err)
					}
				}
			})
			t.Run("Ranges", func(t *testing.T) {
				t.Parallel()
				b := newBlob(t, 5, be.big)
				put(t, s, b)
				all := b.bytes(t)
				size := b.size
				for _, r := range []struct{ off, n int64 }{
					{0, 1}, {0, 0}, {1, 10}, {size - 1, 1}, {size - 1, -1}, {size - 10, 100}, {size, -1}, {size, 5}, {size + 5, 1},
					{blobstore.ChunkSize - 3, 6}, {blobstore.ChunkSize, blobstore.ChunkSize}, {s3PartSize - 1, s3PartSize + 2},
					{100, size - 200}, {size / 2, -1},
				} {
					want := all[min(r.off, size):]
					if r.n >= 0 {
						want = want[:min(r.n, int64(len(want)))]
					}
					if got := read(t, s, b.digest, r.off, r.n); !bytes.Equal(got, want) {
						t.Errorf("get(%d, %d): %d bytes, want %d bytes (equal: %v)", r.off, r.n, len(got), len(want), bytes.Equal(got, want))
					}
				}
			})
			t.Run("MismatchStoresNothing", func(t *testing.T) {
				t.Parallel()
				b := newBlob(t, 6, be.big)
				other := newBlob(t, 7, be.big)
				longer := newBlob(t, 6, be.big+1)
				for name, r := range map[string]struct {
					size int64
					r    io.Reader
				}{
					"OtherContent": {b.size, other.reader()},
					"Shorter":      {b.size, io.LimitReader(b.reader(), b.size-1)},
					"Longer":       {b.size, longer.reader()},
					"SizeWrong":    {b.size - 1, io.LimitReader(b.reader(), b.size-1)},
				} {
					err := s.Put(t.Context(), b.digest, r.size, r.r)
					if !errors.Is(err, blobstore.ErrDigestMismatch) {
						t.Errorf("%s: put = %v, want ErrDigestMismatch", name, err)
					}
					if stored(t, s, b.digest) {
						t.Fatalf("%s: a blob whose content does not match its digest is stored", name)
					}
				}
				put(t, s, b) // the right content still goes in afterwards
				if !stored(t, s, b.digest) {
					t.Error("the right content was not stored after the mismatches")
				}
			})
			t.Run("DuplicatePut", func(t *testing.T) {
				t.Parallel()
				b := newBlob(t, 8, 5000)
				put(t, s, b)
				first, err := s.Stat(t.Context(), b.digest)
				if err != nil {
					t.Fatal(err)
				}
				// stored again: a List before the second put's start no
				// longer offers it for pruning
				second := time.Now().Add(-time.Second) // S3 times are whole seconds
				put(t, s, b)
				again, err := s.Stat(t.Context(), b.digest)
				if err != nil || again.Size != b.size {
					t.Errorf("after a second put: %+v, %v; want it as before: %+v", again, err, first)
				}
				err = s.List(t.Context(), second, func(l blobstore.Blob) error {
					if l.Digest == b.digest {
						t.Errorf("a blob stored again is listed as stored before the second put")
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if got := read(t, s, b.digest, 0, -1); !bytes.Equal(got, b.bytes(t)) {
					t.Error("content changed by a second put")
				}
			})
			t.Run("ConcurrentPutsOfOneDigest", func(t *testing.T) {
				t.Parallel()
				b := newBlob(t, 9, be.big)
				var wg sync.WaitGroup
				errs := make([]error, 6)
				for i := range errs {
					wg.Go(func() { errs[i] = s.Put(t.Context(), b.digest, b.size, b.reader()) })
				}
				wg.Wait()
				for i, err := range errs {
					if err != nil {
						t.Errorf("put %d: %v", i, err)
					}
				}
				if got := read(t, s, b.digest, 0, -1); !bytes.Equal(got, b.bytes(t)) {
					t.Error("content wrong after concurrent puts")
				}
			})
			t.Run("CancelledMidPutStoresNothing", func(t *testing.T) {
				t.Parallel()
				b := newBlob(t, 10, be.big)
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				r := &cancelAfter{r: b.reader(), n: be.big / 2, cancel: cancel}
				err := s.Put(ctx, b.digest, b.size, r)
				if err == nil {
					t.Fatal("put with its context cancelled half-way returned nil")
				}
				if !errors.Is(err, context.Canceled) {
					t.Errorf("put: %v, want context.Canceled", err)
				}
				if stored(t, s, b.digest) {
					t.Error("a blob whose put was cancelled is stored")
				}
			})
		})
	}
}

// cancelAfter cancels its context once n bytes were read.
type cancelAfter struct {
	r      io.Reader
	n      int64
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n -= int64(n); c.n <= 0 {
		c.cancel()
	}
	return n, err
}

// TestLargeBlobStreamsInBoundedMemory: a 64 MiB blob goes in and out of
// every backend while the heap grows by no more than twice what the
// backend buffers (the garbage collector lets the heap reach twice what
// is live) plus 8 MiB for the rest of the process, well below the blob's
// size. It does not run in parallel with other tests, whose allocations
// would count.
func TestLargeBlobStreamsInBoundedMemory(t *testing.T) {
	const size = 64 << 20
	b := newBlob(t, 11, size)
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			s := be.open(t)
			bound := 2*be.buffers + 8<<20
			if bound >= size/2 {
				t.Fatalf("the bound %d cannot tell streaming from holding the blob", bound)
			}
			peak := watchHeap(t, func() {
				put(t, s, b)
				rc, err := s.Get(t.Context(), b.digest, 0, -1)
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				if _, err := io.Copy(io.Discard, blobstore.Verify(rc, b.digest, b.size)); err != nil {
					t.Fatalf("read back: %v", err)
				}
			})
			t.Logf("heap grew by %.1f MiB at most moving %d MiB (bound %.1f MiB)", float64(peak)/(1<<20), size>>20, float64(bound)/(1<<20))
			if peak > bound {
				t.Errorf("heap grew by %d bytes moving a blob of %d, more than the bound %d", peak, size, bound)
			}
		})
	}
}

// watchHeap runs f and returns how far the heap grew above where it was
// before, sampled every few milliseconds.
func watchHeap(t *testing.T, f func()) int64 {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := int64(ms.HeapAlloc)
	var peak atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if d := int64(ms.HeapAlloc) - base; d > peak.Load() {
				peak.Store(d)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	f()
	close(done)
	wg.Wait()
	return peak.Load()
}

// TestS3LeavesNoUploadBehind: a Put refused for its content or cancelled
// half-way aborts its multipart upload, so the bucket keeps no parts.
func TestS3LeavesNoUploadBehind(t *testing.T) {
	t.Parallel()
	s := openS3(t, blobstore.S3Config{PartSize: s3PartSize, Parallel: 2})
	b := newBlob(t, 12, 3*s3PartSize)
	if err := s.Put(t.Context(), b.digest, b.size, newBlob(t, 13, b.size).reader()); !errors.Is(err, blobstore.ErrDigestMismatch) {
		t.Fatalf("put of other content: %v, want ErrDigestMismatch", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if err := s.Put(ctx, b.digest, b.size, &cancelAfter{r: b.reader(), n: 2 * s3PartSize, cancel: cancel}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled put: %v, want context.Canceled", err)
	}
	client, err := seaweed.Shared(t).Client()
	if err != nil {
		t.Fatal(err)
	}
	for u := range client.ListIncompleteUploads(t.Context(), seaweed.TestBucket, s.Prefix(), true) {
		t.Errorf("upload left behind: %+v", u)
	}
}
