package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
)

// Directories in WorkspaceDir beside the runs' workspaces (not run ids: the
// sweep leaves them alone), where attempts get their ORDO_OUTPUT_DIR and
// ORDO_INPUT_DIR.
const (
	outputsDirName = ".outputs"
	inputsDirName  = ".inputs"
)

// attemptFiles are the data plane's paths of one attempt.
type attemptFiles struct {
	out, in     pooledDir
	metricsPath string
	metricsGone bool   // read and removed, or never written
	release     func() // releases the input blobs it holds in the cache
}

// dirPool hands out empty directories and takes them back when nothing
// was made or removed in them: making and removing a directory for each
// attempt was a good part of a quick command's cost (as the result files'
// directory was), while a look at a directory's change time is one stat.
type dirPool struct {
	parent string
	prefix string // the worker's: workers may share WorkspaceDir
	mode   os.FileMode
	mu     sync.Mutex
	free   []pooledDir
}

// pooledDir is a directory from a pool, with its change time when handed
// out: any entry made or removed in it, a chmod or a touch changes it.
type pooledDir struct {
	path  string
	mode  os.FileMode
	ctime syscall.Timespec
}

const maxPooledDirs = 256

func newDirPool(parent, prefix string, mode os.FileMode) *dirPool {
	return &dirPool{parent: parent, prefix: prefix, mode: mode}
}

// get returns an empty directory, made when the pool has none.
func (p *dirPool) get() (pooledDir, error) {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		d := p.free[n-1]
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return d, nil
	}
	p.mu.Unlock()
	d := pooledDir{path: filepath.Join(p.parent, fmt.Sprintf("%s-%016x", p.prefix, rand.Uint64())), mode: p.mode}
	err := os.Mkdir(d.path, p.mode)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(p.parent, 0o700); err == nil {
			err = os.Mkdir(d.path, p.mode)
		}
	}
	if err != nil {
		return pooledDir{}, err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(d.path, &st); err != nil {
		return pooledDir{}, err
	}
	d.ctime = st.Ctim
	return d, nil
}

// unchanged reports whether nothing was made or removed in d since it was
// handed out, and its mode is the same, so it is still empty as it was.
func (d pooledDir) unchanged() bool {
	var st syscall.Stat_t
	if syscall.Stat(d.path, &st) != nil || st.Ctim != d.ctime || os.FileMode(st.Mode)&fs.ModePerm != d.mode {
		return false
	}
	// Timestamps advance by kernel ticks: a change within the tick the
	// directory was made in leaves its change time as it was.
	if time.Since(time.Unix(st.Ctim.Unix())) > time.Second {
		return true
	}
	empty, err := isEmptyDir(d.path)
	return err == nil && empty
}

// isEmptyDir reports whether dir has no entries.
func isEmptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if err == io.EOF {
		return true, nil
	}
	return false, err
}

// put takes a directory back: into the pool when it is unchanged, else it
// is removed with what it holds.
func (p *dirPool) put(d pooledDir) {
	if d.path == "" {
		return
	}
	if d.unchanged() {
		p.mu.Lock()
		if len(p.free) < maxPooledDirs {
			p.free = append(p.free, d)
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
	_ = removeTree(d.path)
}

// drain removes the pooled directories, when the worker stops.
func (p *dirPool) drain() {
	p.mu.Lock()
	free := p.free
	p.free = nil
	p.mu.Unlock()
	for _, d := range free {
		_ = removeTree(d.path)
	}
}

// commandFiles prepares a command attempt's files: an empty output
// directory, an input directory (read-only, empty when the attempt has no
// input files), both from the worker's pools, and the metrics path beside
// its result path (nothing made).
func (w *Worker) commandFiles(ctx context.Context, files map[string][]domain.Output, resultPath string) (attemptFiles, error) {
	f := attemptFiles{release: func() {}}
	f.metricsPath = strings.TrimSuffix(resultPath, ".json") + ".metrics.json"
	var err error
	if f.out, err = w.outDirs.get(); err != nil {
		return f, fmt.Errorf("create ORDO_OUTPUT_DIR: %w", err)
	}
	if f.in, err = w.inDirs.get(); err != nil {
		return f, fmt.Errorf("create ORDO_INPUT_DIR: %w", err)
	}
	if len(files) == 0 {
		return f, nil
	}
	if err := os.Chmod(f.in.path, 0o700); err != nil {
		return f, fmt.Errorf("create ORDO_INPUT_DIR: %w", err)
	}
	f.release, err = w.materializeInputs(ctx, files, f.in.path)
	return f, err
}

// outputDir is the output directory to look for outputs in: none when the
// task made nothing in it.
func (f attemptFiles) outputDir() string {
	if f.out.path == "" || f.out.unchanged() {
		return ""
	}
	return f.out.path
}

// removeFiles gives back the attempt's directories (emptied), removes its
// metrics file, and releases its input blobs.
func (w *Worker) removeFiles(f *attemptFiles) {
	w.outDirs.put(f.out)
	w.inDirs.put(f.in)
	if !f.metricsGone && f.metricsPath != "" {
		_ = os.Remove(f.metricsPath)
	}
	if f.release != nil {
		f.release()
	}
}

// removeLeftDirs removes the attempt directories that workers which
// stopped or died left in WorkspaceDir (a worker killed midway leaves its
// attempts' outputs there). Directories of workers that still run, or that
// the workers table does not know, are left alone.
func (w *Worker) removeLeftDirs(ctx context.Context) (int, error) {
	byWorker := map[uuid.UUID][]string{}
	for _, parent := range []string{w.outDirs.parent, w.inDirs.parent} {
		entries, err := os.ReadDir(parent)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
		for _, e := range entries {
			id, err := uuid.Parse(e.Name()[:min(len(e.Name()), 36)])
			if err == nil && id != w.id {
				byWorker[id] = append(byWorker[id], filepath.Join(parent, e.Name()))
			}
		}
	}
	if len(byWorker) == 0 {
		return 0, nil
	}
	rows, err := w.pool.Query(ctx, `
SELECT id FROM workers WHERE id = ANY($1) AND (stopped_at IS NOT NULL OR dead_at IS NOT NULL)`, slices.Collect(maps.Keys(byWorker)))
	if err != nil {
		return 0, fmt.Errorf("find stopped workers: %w", err)
	}
	gone, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return 0, fmt.Errorf("find stopped workers: %w", err)
	}
	n := 0
	for _, id := range gone {
		for _, d := range byWorker[id] {
			if err := removeTree(d); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}
