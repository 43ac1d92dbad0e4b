package jobs

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/ordoflow/ordo/commands"
)

// TestPooledDirSeesEveryChange: a file made in a directory right after it
// was made (within the same kernel tick, where its change time stays the
// same) is seen, and so is one made in a directory used before; an
// unchanged directory goes back to the pool, a changed one is removed.
func TestPooledDirSeesEveryChange(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	p := newDirPool(filepath.Join(root, "out"), "w", 0o700)
	for i := range 200 {
		d, err := p.get()
		if err != nil {
			t.Fatal(err)
		}
		f := attemptFiles{out: d}
		if i%2 == 0 {
			if f.outputDir() != "" {
				t.Fatalf("round %d: an untouched directory was taken for changed", i)
			}
			p.put(d)
			if len(p.free) != 1 {
				t.Fatalf("round %d: an untouched directory was not pooled", i)
			}
			continue
		}
		if err := os.WriteFile(filepath.Join(d.path, "x"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if f.outputDir() == "" {
			t.Fatalf("round %d: a file made in the directory went unseen", i)
		}
		p.put(d)
		if _, err := os.Stat(d.path); !os.IsNotExist(err) {
			t.Fatalf("round %d: a changed directory was kept (%v)", i, err)
		}
	}
}

// BenchmarkAttemptFilesNoData is what the data plane adds to an attempt
// that exchanges no files, once the worker's directory pools are warm
// (their directories older than a second).
func BenchmarkAttemptFilesNoData(b *testing.B) {
	ws := b.TempDir()
	w := &Worker{opts: WorkerOptions{WorkspaceDir: ws}, id: uuid.New()}
	w.outDirs = newDirPool(filepath.Join(ws, outputsDirName), "w", 0o700)
	w.inDirs = newDirPool(filepath.Join(ws, inputsDirName), "w", 0o555)
	p := commands.Plan{TaskRunID: uuid.New(), Attempt: 1}
	f, err := w.commandFiles(b.Context(), nil, filepath.Join(ws, "r.json"))
	if err != nil {
		b.Fatal(err)
	}
	w.removeFiles(&f)
	time.Sleep(1100 * time.Millisecond)
	b.ResetTimer()
	for range b.N {
		rp, err := w.resultPath(p)
		if err != nil {
			b.Fatal(err)
		}
		f, err := w.commandFiles(b.Context(), nil, rp)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := readMetrics(f.metricsPath); err != nil {
			b.Fatal(err)
		}
		f.metricsGone = true
		if f.outputDir() != "" {
			b.Fatal("outputs in an untouched directory")
		}
		w.removeFiles(&f)
	}
}
