package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/ordoflow/ordo/domain"
)

// Defaults of the output size caps.
const (
	DefaultMaxOutputBytes        = 5 << 30  // one output
	DefaultMaxAttemptOutputBytes = 20 << 30 // all the outputs of one attempt
)

// MaxMetricsBytes is the largest metrics file a task may write.
const MaxMetricsBytes = 1 << 20

// errNoBlobStore fails the attempts that need the data plane on a worker
// started without a blob store.
var errNoBlobStore = errors.New("this worker has no blob store (set ORDO_BLOB_STORE or --blob-store)")

// storeOutputs stores every regular file under dir in the blob store and
// returns them as outputs, sorted by name. A symlink, device, fifo or
// socket, a name that is not a valid output name, or a file past a size
// cap fails the whole attempt with a message that names the file; nothing
// is returned then, so no event names a blob. Each blob is wholly stored
// when storeOutputs returns.
func (w *Worker) storeOutputs(ctx context.Context, dir string) ([]domain.Output, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read ORDO_OUTPUT_DIR: %w", err)
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		switch t := e.Type(); {
		case t.IsDir():
			return nil
		case t&fs.ModeSymlink != 0:
			return fmt.Errorf("output %q is a symbolic link: outputs must be regular files (copy the file into ORDO_OUTPUT_DIR)", name)
		case !t.IsRegular():
			return fmt.Errorf("output %q is not a regular file (%s): outputs must be regular files", name, fileKind(t))
		}
		if err := domain.ValidateOutputName(name); err != nil {
			return fmt.Errorf("%v", err)
		}
		if len(files) == domain.MaxOutputsPerAttempt {
			return fmt.Errorf("more than %d files in ORDO_OUTPUT_DIR: at most %d outputs per attempt", domain.MaxOutputsPerAttempt, domain.MaxOutputsPerAttempt)
		}
		files = append(files, name)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(files) > 0 && w.opts.BlobStore == nil {
		return nil, errNoBlobStore
	}
	slices.Sort(files)
	outs := make([]domain.Output, 0, len(files))
	left := w.opts.MaxAttemptOutputBytes
	for _, name := range files {
		o, err := w.storeOutput(ctx, dir, name, left)
		if err != nil {
			return nil, err
		}
		left -= o.Size
		outs = append(outs, o)
	}
	return outs, nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "mode " + m.String()
}

// storeOutput hashes one file, then streams it to the store, which checks
// the bytes against the digest: a file that changed between the two reads
// is refused rather than stored under a wrong name. left is what the
// attempt's cap still allows.
func (w *Worker) storeOutput(ctx context.Context, dir, name string, left int64) (domain.Output, error) {
	// O_NOFOLLOW: the file may have been swapped for a link since the walk
	f, err := os.OpenFile(filepath.Join(dir, filepath.FromSlash(name)), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return domain.Output{}, fmt.Errorf("output %q: %v", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return domain.Output{}, fmt.Errorf("output %q: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return domain.Output{}, fmt.Errorf("output %q is not a regular file (%s): outputs must be regular files", name, fileKind(fi.Mode()))
	}
	limit := min(w.opts.MaxOutputBytes, left)
	if err := checkCap(name, fi.Size(), w.opts.MaxOutputBytes, left); err != nil {
		return domain.Output{}, err
	}
	h := sha256.New()
	head := &headWriter{max: 512}
	n, err := io.Copy(io.MultiWriter(h, head), io.LimitReader(f, limit+1))
	if err != nil {
		return domain.Output{}, fmt.Errorf("read output %q: %w", name, err)
	}
	if err := checkCap(name, n, w.opts.MaxOutputBytes, left); err != nil {
		return domain.Output{}, err // it grew while read
	}
	o := domain.Output{Name: name, SHA256: hex.EncodeToString(h.Sum(nil)), Size: n, MediaType: mediaType(name, head.b)}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return domain.Output{}, fmt.Errorf("read output %q: %w", name, err)
	}
	if err := w.opts.BlobStore.Put(ctx, o.SHA256, o.Size, io.LimitReader(f, o.Size)); err != nil {
		return domain.Output{}, fmt.Errorf("store output %q: %w", name, err)
	}
	return o, nil
}

// checkCap fails an output of size bytes past the per-output cap or what
// is left of the attempt's.
func checkCap(name string, size, perOutput, left int64) error {
	switch {
	case size > perOutput:
		return fmt.Errorf("output %q is larger than the %d bytes one output may have", name, perOutput)
	case size > left:
		return fmt.Errorf("output %q takes the attempt's outputs past the %d bytes they may have in all", name, left)
	}
	return nil
}

// headWriter keeps the first max bytes written to it.
type headWriter struct {
	b   []byte
	max int
}

func (h *headWriter) Write(p []byte) (int, error) {
	if room := h.max - len(h.b); room > 0 {
		h.b = append(h.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// dataTypes are media types of files data pipelines write that Go's table
// and /etc/mime.types may not know.
var dataTypes = map[string]string{
	".csv": "text/csv", ".tsv": "text/tab-separated-values", ".md": "text/markdown", ".markdown": "text/markdown",
	".txt": "text/plain", ".log": "text/plain", ".json": "application/json", ".jsonl": "application/jsonl",
	".yaml": "application/yaml", ".yml": "application/yaml", ".parquet": "application/vnd.apache.parquet",
	".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
	".html": "text/html", ".pdf": "application/pdf",
}

// mediaType is a file's media type by its extension, else by sniffing its
// first bytes.
func mediaType(name string, head []byte) string {
	ext := strings.ToLower(path.Ext(name))
	if t, ok := dataTypes[ext]; ok {
		return t
	}
	if ext != "" {
		if t := mime.TypeByExtension(ext); t != "" {
			return t
		}
	}
	return http.DetectContentType(head)
}

// readMetrics reads the metrics a task wrote at ORDO_METRICS_PATH: none
// when it wrote no file (or an empty one), else a JSON object of name ->
// finite number. It removes the file.
func readMetrics(p string) (map[string]float64, error) {
	b, err := readTaskFile(p, MaxMetricsBytes, "metrics")
	if err != nil || b == nil {
		return nil, err
	}
	return parseMetrics(b)
}

// parseMetrics checks a metrics file's content.
func parseMetrics(b []byte) (map[string]float64, error) {
	const what = "the metrics written to ORDO_METRICS_PATH"
	if len(b) > MaxMetricsBytes {
		return nil, fmt.Errorf("%s are larger than %d bytes", what, MaxMetricsBytes)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s are not a JSON object of name -> number (%v); they start with %q", what, err, b[:min(len(b), 40)])
	}
	m := make(map[string]float64, len(raw))
	for name, v := range raw {
		var f float64
		if err := json.Unmarshal(v, &f); err != nil || string(v) == "null" {
			return nil, fmt.Errorf("%s: metric %q is %s, not a finite number", what, name, v)
		}
		m[name] = f
	}
	if err := domain.ValidateMetrics(m); err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	return m, nil
}
