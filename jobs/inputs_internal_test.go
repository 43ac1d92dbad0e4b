package jobs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/domain"
)

// countingStore counts Gets, and can fail them halfway through.
type countingStore struct {
	blobstore.Store
	gets      atomic.Int32
	breakRead bool
}

func (s *countingStore) Get(ctx context.Context, digest string, off, n int64) (io.ReadCloser, error) {
	s.gets.Add(1)
	rc, err := s.Store.Get(ctx, digest, off, n)
	if err != nil || !s.breakRead {
		return rc, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(io.LimitReader(rc, 10), errReader{}), rc}, nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

// putBlobs stores blobs of the given sizes and returns their digests.
func putBlobs(t testing.TB, s blobstore.Store, sizes ...int) []domain.Output {
	t.Helper()
	var outs []domain.Output
	for i, n := range sizes {
		b := bytes.Repeat([]byte{byte('a' + i)}, n)
		sum := sha256.Sum256(b)
		d := hex.EncodeToString(sum[:])
		if err := s.Put(context.Background(), d, int64(n), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		outs = append(outs, domain.Output{Name: string(rune('a'+i)) + ".bin", SHA256: d, Size: int64(n)})
	}
	return outs
}

func newTestCache(t testing.TB, max int64) (*blobCache, *countingStore, string) {
	t.Helper()
	dir, err := blobstore.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Store: dir}
	cacheDir := filepath.Join(t.TempDir(), "cache")
	return newBlobCache(cacheDir, max, store), store, cacheDir
}

func cachedFiles(t *testing.T, dir string) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range entries {
		out[e.Name()] = true
	}
	return out
}

func TestBlobCache(t *testing.T) {
	t.Parallel()

	t.Run("FetchedOnceForConcurrentAttempts", func(t *testing.T) {
		t.Parallel()
		c, store, dir := newTestCache(t, 1<<20)
		o := putBlobs(t, store, 100_000)[0]
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				p, release, err := c.acquire(t.Context(), o.SHA256, o.Size)
				if err != nil {
					t.Error(err)
					return
				}
				defer release()
				if fi, err := os.Stat(p); err != nil || fi.Size() != o.Size || fi.Mode().Perm() != 0o444 {
					t.Errorf("cached file %v, %v", fi, err)
				}
			})
		}
		wg.Wait()
		if n := store.gets.Load(); n != 1 {
			t.Errorf("%d downloads for 8 attempts, want 1", n)
		}
		if files := cachedFiles(t, dir); len(files) != 1 || !files[o.SHA256] {
			t.Errorf("cache holds %v", files)
		}
	})

	t.Run("EvictsLeastRecentlyUsedNotInUse", func(t *testing.T) {
		t.Parallel()
		c, store, dir := newTestCache(t, 250)
		outs := putBlobs(t, store, 100, 100, 100, 100)
		acquire := func(o domain.Output) func() {
			t.Helper()
			_, release, err := c.acquire(t.Context(), o.SHA256, o.Size)
			if err != nil {
				t.Fatal(err)
			}
			return release
		}
		held := acquire(outs[0]) // in use throughout
		acquire(outs[1])()
		acquire(outs[2])() // 300 bytes: b, the least recently used not in use, goes
		if files := cachedFiles(t, dir); !files[outs[0].SHA256] || files[outs[1].SHA256] || !files[outs[2].SHA256] {
			t.Fatalf("after a, b, c with a in use: cache holds %v, want a and c", files)
		}
		acquire(outs[2])() // c used again: more recent than a
		held()
		acquire(outs[3])() // a is now the least recently used
		if files := cachedFiles(t, dir); files[outs[0].SHA256] || !files[outs[2].SHA256] || !files[outs[3].SHA256] {
			t.Fatalf("after a released and d fetched: cache holds %v, want c and d", files)
		}
		// a cache that starts on the directory takes in what is there
		again := newBlobCache(dir, 250, store)
		before := store.gets.Load()
		acquire2 := func(o domain.Output) {
			_, release, err := again.acquire(t.Context(), o.SHA256, o.Size)
			if err != nil {
				t.Fatal(err)
			}
			release()
		}
		acquire2(outs[2])
		acquire2(outs[3])
		if store.gets.Load() != before {
			t.Error("a new cache on the same directory downloaded blobs it holds")
		}
	})

	t.Run("ChangedFileFetchedAgain", func(t *testing.T) {
		t.Parallel()
		c, store, _ := newTestCache(t, 1<<20)
		o := putBlobs(t, store, 1000)[0]
		p, release, err := c.acquire(t.Context(), o.SHA256, o.Size)
		if err != nil {
			t.Fatal(err)
		}
		release()
		// what a task that made its input writable could do
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, bytes.Repeat([]byte("x"), 1000), 0o644); err != nil {
			t.Fatal(err)
		}
		p, release, err = c.acquire(t.Context(), o.SHA256, o.Size)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		got, _ := os.ReadFile(p)
		if sum := sha256.Sum256(got); hex.EncodeToString(sum[:]) != o.SHA256 || store.gets.Load() != 2 {
			t.Errorf("a changed cached file was handed out again (%d downloads)", store.gets.Load())
		}
	})

	t.Run("FailedFetchLeavesNothing", func(t *testing.T) {
		t.Parallel()
		c, store, dir := newTestCache(t, 1<<20)
		o := putBlobs(t, store, 100_000)[0]
		store.breakRead = true
		if _, _, err := c.acquire(t.Context(), o.SHA256, o.Size); err == nil {
			t.Fatal("a broken download was taken")
		}
		if files := cachedFiles(t, dir); len(files) != 0 {
			t.Errorf("a broken download left %v in the cache", files)
		}
		store.breakRead = false
		if _, release, err := c.acquire(t.Context(), o.SHA256, o.Size); err != nil {
			t.Errorf("after a broken download: %v", err)
		} else {
			release()
		}
	})

	t.Run("WriteFailureIsClear", func(t *testing.T) {
		t.Parallel()
		f, err := os.Open(os.DevNull) // read-only: every write fails, as on a full disk
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		_, err = copyTo(f, bytes.NewReader([]byte("data")))
		var we *cacheWriteError
		if !errors.As(err, &we) {
			t.Fatalf("write failure %v is not a cacheWriteError", err)
		}
		msg := inputError("train", domain.Output{Name: "model.bin"}, err).Error()
		if want := `input "model.bin" of task train: could not write to the worker's blob cache`; len(msg) < len(want) || msg[:len(want)] != want {
			t.Errorf("message %q", msg)
		}
	})
}

// BenchmarkMaterializeCachedInput: an input already in the worker's cache
// is hard linked, whatever its size (target: under 10 ms).
func BenchmarkMaterializeCachedInput(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			c, store, _ := newTestCache(b, 1<<30)
			o := putBlobs(b, store, size)[0]
			w := &Worker{cache: c, opts: WorkerOptions{BlobStore: store}}
			files := map[string][]domain.Output{"train": {o}}
			root := b.TempDir()
			release, err := w.materializeInputs(b.Context(), files, mkdirTemp(b, root))
			if err != nil {
				b.Fatal(err)
			}
			release()
			b.ResetTimer()
			for range b.N {
				dir := mkdirTemp(b, root)
				release, err := w.materializeInputs(b.Context(), files, dir)
				if err != nil {
					b.Fatal(err)
				}
				release()
				b.StopTimer()
				_ = removeTree(dir)
				b.StartTimer()
			}
		})
	}
}

func mkdirTemp(b *testing.B, root string) string {
	dir, err := os.MkdirTemp(root, "in-")
	if err != nil {
		b.Fatal(err)
	}
	return dir
}
