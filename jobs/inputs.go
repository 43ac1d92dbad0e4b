package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/domain"
)

// DefaultBlobCacheBytes is how much a worker's cache of input blobs keeps
// before it evicts the least recently used.
const DefaultBlobCacheBytes = 10 << 30

// blobCache keeps blobs a worker fetched for inputs in a directory, one
// read-only file per digest, so that an input already on the worker is
// hard linked into an attempt's ORDO_INPUT_DIR instead of fetched again.
// A file is only ever there whole and verified: it is downloaded to a
// temporary file beside it, checked against its digest, synced and renamed.
// Attempts needing a digest that is being fetched wait for that fetch.
type blobCache struct {
	dir   string
	max   int64
	store blobstore.Store

	initOnce sync.Once
	initErr  error

	mu      sync.Mutex
	entries map[string]*cachedBlob
	size    int64 // bytes of the entries fetched
	tick    int64 // the clock of last uses
}

type cachedBlob struct {
	size  int64
	mtime time.Time     // as renamed into place: a file changed since is fetched again
	used  int64         // tick of its last use
	refs  int           // attempts using it: never evicted while above 0
	fetch chan struct{} // closed when its fetch ended; nil once it is in place
}

// fetchPrefix names the temporary files of fetches.
const fetchPrefix = ".fetch-"

func newBlobCache(dir string, max int64, store blobstore.Store) *blobCache {
	return &blobCache{dir: dir, max: max, store: store, entries: map[string]*cachedBlob{}}
}

func (c *blobCache) path(digest string) string { return filepath.Join(c.dir, digest) }

// init makes the directory and takes in the blobs a previous worker left
// in it; fetches that a worker killed midway left are removed once old
// enough that no live worker sharing the directory can still be writing
// them.
func (c *blobCache) init() error {
	c.initOnce.Do(func() {
		if err := os.MkdirAll(c.dir, 0o755); err != nil {
			c.initErr = fmt.Errorf("create blob cache directory: %w", err)
			return
		}
		entries, err := os.ReadDir(c.dir)
		if err != nil {
			c.initErr = fmt.Errorf("read blob cache directory: %w", err)
			return
		}
		type found struct {
			digest string
			fi     fs.FileInfo
		}
		var blobs []found
		for _, e := range entries {
			fi, err := e.Info()
			if err != nil {
				continue
			}
			switch {
			case strings.HasPrefix(e.Name(), fetchPrefix) && time.Since(fi.ModTime()) > 24*time.Hour:
				_ = os.Remove(filepath.Join(c.dir, e.Name()))
			case blobstore.ValidDigest(e.Name()) && fi.Mode().IsRegular():
				blobs = append(blobs, found{e.Name(), fi})
			}
		}
		slices.SortFunc(blobs, func(a, b found) int { return a.fi.ModTime().Compare(b.fi.ModTime()) })
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, b := range blobs {
			c.tick++
			c.entries[b.digest] = &cachedBlob{size: b.fi.Size(), mtime: b.fi.ModTime(), used: c.tick}
			c.size += b.fi.Size()
		}
		c.evictLocked()
	})
	return c.initErr
}

// acquire returns the path of the cached file of a blob, fetching it when
// it is not there yet, and a release to call once the attempt no longer
// needs it (until then it is not evicted).
func (c *blobCache) acquire(ctx context.Context, digest string, size int64) (string, func(), error) {
	if err := c.init(); err != nil {
		return "", nil, err
	}
	for {
		c.mu.Lock()
		e := c.entries[digest]
		if e == nil {
			e = &cachedBlob{size: size, refs: 1, fetch: make(chan struct{})}
			c.entries[digest] = e
			c.mu.Unlock()
			err := c.fetch(ctx, digest, size, e)
			c.mu.Lock()
			ch := e.fetch
			e.fetch = nil
			if err != nil {
				delete(c.entries, digest)
			} else {
				c.tick++
				e.used = c.tick
				c.size += e.size
				c.evictLocked()
			}
			c.mu.Unlock()
			close(ch)
			if err != nil {
				return "", nil, err
			}
			return c.path(digest), c.releaser(e), nil
		}
		if ch := e.fetch; ch != nil {
			c.mu.Unlock()
			select {
			case <-ch: // fetched, or failed: look again
			case <-ctx.Done():
				return "", nil, ctx.Err()
			}
			continue
		}
		e.refs++
		c.tick++
		e.used = c.tick
		c.mu.Unlock()
		if c.intact(digest, e) {
			return c.path(digest), c.releaser(e), nil
		}
		// changed or removed behind the cache's back: fetch it again
		c.mu.Lock()
		e.refs--
		if c.entries[digest] == e {
			delete(c.entries, digest)
			c.size -= e.size
		}
		c.mu.Unlock()
	}
}

func (c *blobCache) releaser(e *cachedBlob) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			e.refs--
			c.evictLocked()
			c.mu.Unlock()
		})
	}
}

// intact reports whether a cached file is still as it was put in place:
// read-only, of its size and modification time. A task can make its input
// writable and change it (its owner can, and root writes anyway); such a
// file is not handed to another attempt.
func (c *blobCache) intact(digest string, e *cachedBlob) bool {
	fi, err := os.Stat(c.path(digest))
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() == 0o444 && fi.Size() == e.size && fi.ModTime().Equal(e.mtime)
}

// fetch downloads a blob into the cache: into a temporary file, verified
// against its digest and size, synced, made read-only and renamed to its
// digest. On any failure the temporary file is removed.
func (c *blobCache) fetch(ctx context.Context, digest string, size int64, e *cachedBlob) error {
	rc, err := c.store.Get(ctx, digest, 0, -1)
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(c.dir, fetchPrefix+digest[:12]+"-*")
	if err != nil {
		return &cacheWriteError{dir: c.dir, err: err}
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := copyTo(tmp, blobstore.Verify(rc, digest, size)); err != nil {
		return err
	}
	if err := tmp.Chmod(0o444); err != nil {
		return &cacheWriteError{dir: c.dir, err: err}
	}
	if err := tmp.Sync(); err != nil {
		return &cacheWriteError{dir: c.dir, err: err}
	}
	fi, err := tmp.Stat()
	if err != nil {
		return &cacheWriteError{dir: c.dir, err: err}
	}
	if err := tmp.Close(); err != nil {
		return &cacheWriteError{dir: c.dir, err: err}
	}
	if err := os.Rename(tmp.Name(), c.path(digest)); err != nil {
		return &cacheWriteError{dir: c.dir, err: err}
	}
	done = true
	e.mtime = fi.ModTime()
	return nil
}

// copyTo copies r to f, telling a write error (a full disk) from a read
// error (the store, or a digest mismatch).
func copyTo(f *os.File, r io.Reader) (int64, error) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			if _, err := f.Write(buf[:k]); err != nil {
				return n, &cacheWriteError{dir: filepath.Dir(f.Name()), err: err}
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// cacheWriteError is a failure to write into the blob cache's directory.
type cacheWriteError struct {
	dir string
	err error
}

func (e *cacheWriteError) Error() string {
	return fmt.Sprintf("could not write to the worker's blob cache %s: %v", e.dir, e.err)
}

func (e *cacheWriteError) Unwrap() error { return e.err }

// evictLocked removes the least recently used blobs no attempt uses until
// the cache is within its size (or only blobs in use are left).
func (c *blobCache) evictLocked() {
	for c.size > c.max {
		var victim string
		var oldest int64
		for d, e := range c.entries {
			if e.refs == 0 && e.fetch == nil && (victim == "" || e.used < oldest) {
				victim, oldest = d, e.used
			}
		}
		if victim == "" {
			return
		}
		_ = os.Remove(c.path(victim))
		c.size -= c.entries[victim].size
		delete(c.entries, victim)
	}
}

// inputError is the failure of an input's fetch, in the words a user needs.
func inputError(task string, o domain.Output, err error) error {
	var we *cacheWriteError
	switch {
	case errors.Is(err, blobstore.ErrDigestMismatch):
		return fmt.Errorf("output %q of task %s does not match its digest %s: the blob store returned other content (%v)", o.Name, task, o.SHA256, err)
	case errors.Is(err, blobstore.ErrNotFound):
		return fmt.Errorf("output %q of task %s (%s) is not in the blob store", o.Name, task, o.SHA256)
	case errors.As(err, &we):
		return fmt.Errorf("input %q of task %s: %v", o.Name, task, err)
	}
	return fmt.Errorf("fetch output %q of task %s from the blob store: %w", o.Name, task, err)
}

// materializeInputs puts the outputs of the upstream tasks at
// dir/<task>/<name>, hard linked from the cache (copied when the cache is
// on another file system), read-only. It returns what releases the cache
// entries, to call when the attempt ended (also on error).
func (w *Worker) materializeInputs(ctx context.Context, files map[string][]domain.Output, dir string) (func(), error) {
	var releases []func()
	release := func() {
		for _, r := range releases {
			r()
		}
	}
	if w.opts.BlobStore == nil {
		return release, errNoBlobStore
	}
	var dirs []string
	for _, task := range slices.Sorted(maps.Keys(files)) {
		for _, o := range files[task] {
			if err := domain.ValidateOutputName(o.Name); err != nil || !domain.ValidName(task) {
				return release, fmt.Errorf("input %q of task %q: not a valid name", o.Name, task)
			}
			src, rel, err := w.cache.acquire(ctx, o.SHA256, o.Size)
			if err != nil {
				return release, inputError(task, o, err)
			}
			releases = append(releases, rel)
			dst := filepath.Join(dir, task, filepath.FromSlash(o.Name))
			parent := filepath.Dir(dst)
			if err := os.MkdirAll(parent, 0o755); err != nil {
				return release, fmt.Errorf("create ORDO_INPUT_DIR: %w", err)
			}
			for p := parent; p != dir && !slices.Contains(dirs, p); p = filepath.Dir(p) {
				dirs = append(dirs, p)
			}
			if err := linkOrCopy(src, dst); err != nil {
				return release, fmt.Errorf("input %q of task %s: %w", o.Name, task, err)
			}
		}
	}
	for _, d := range append(dirs, dir) {
		if err := os.Chmod(d, 0o555); err != nil {
			return release, fmt.Errorf("make ORDO_INPUT_DIR read-only: %w", err)
		}
	}
	return release, nil
}

// linkOrCopy hard links src at dst, or copies it (read-only) where a link
// cannot be made (another file system).
func linkOrCopy(src, dst string) error {
	err := os.Link(src, dst)
	if err == nil || !errors.Is(err, syscall.EXDEV) && !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.EMLINK) {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// removeTree removes a directory that may hold read-only directories.
func removeTree(dir string) error {
	_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
