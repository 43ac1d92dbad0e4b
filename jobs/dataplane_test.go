package jobs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

// dirStore is a directory blob store that lives as long as the test.
func dirStore(t *testing.T) *blobstore.Dir {
	t.Helper()
	s, err := blobstore.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// completion returns the TaskRunCompleted event of a task, failing the test
// when there is none.
func completion(t *testing.T, h taskHistory) domain.TaskRunCompleted {
	t.Helper()
	evs := h.of("TaskRunCompleted")
	if len(evs) != 1 {
		t.Fatalf("task run %s is %s with %d completions: %+v", h.run.ID, h.run.State.Type, len(evs), h.run.LastFailure)
	}
	return evs[0].Event.(domain.TaskRunCompleted)
}

// failure returns the error of a task run's last failed attempt.
func failure(t *testing.T, h taskHistory) string {
	t.Helper()
	if h.run.LastFailure == nil {
		t.Fatalf("task run %s is %s without a failure", h.run.ID, h.run.State.Type)
	}
	return h.run.LastFailure.Error
}

// mustHaveBlobs fails the test unless every output named in the log of fr
// is wholly in the store.
func mustHaveBlobs(t *testing.T, b testBundle, fr domain.FlowRun, store blobstore.Store) {
	t.Helper()
	for name, h := range b.tasks(t, fr) {
		for _, e := range h.events {
			var outs []domain.Output
			switch e := e.Event.(type) {
			case domain.TaskRunCompleted:
				outs = e.Outputs
			case domain.TaskRunCached:
				outs = e.Outputs
			}
			for _, o := range outs {
				blob, err := store.Stat(context.Background(), o.SHA256)
				if err != nil || blob.Size != o.Size {
					t.Errorf("task %s names output %s (%s, %d bytes), not wholly in the store: %+v, %v", name, o.Name, o.SHA256, o.Size, blob, err)
				}
			}
		}
	}
}

// mustBeGone fails the test when the directory a task returned as its
// result is still there.
func mustBeGone(t *testing.T, c domain.TaskRunCompleted, what string) {
	t.Helper()
	var dir string
	if err := json.Unmarshal(c.Result, &dir); err != nil || dir == "" {
		t.Fatalf("the task returned %s, not its %s", c.Result, what)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the attempt's %s %s is left after it (%v)", what, dir, err)
	}
}

func TestOutputsAndMetrics(t *testing.T) {
	t.Parallel()

	t.Run("StoredAndListedInTheCompletion", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		store := dirStore(t)
		b.startWorker(t, jobs.WorkerOptions{BlobStore: store})
		flow := domain.FlowSpec{Name: "outputs", Tasks: []domain.TaskSpec{sh("make", `
set -e
test -d "$ORDO_OUTPUT_DIR" && test -z "$(ls -A "$ORDO_OUTPUT_DIR")"
test -d "$ORDO_INPUT_DIR" && test -z "$(ls -A "$ORDO_INPUT_DIR")"
printf 'a,b\n1,2\n' > "$ORDO_OUTPUT_DIR/table.csv"
mkdir -p "$ORDO_OUTPUT_DIR/plots/2026"
printf '\211PNG\r\n\032\n0000' > "$ORDO_OUTPUT_DIR/plots/2026/residuals"
printf '# report' > "$ORDO_OUTPUT_DIR/report.md"
echo '{"r2": 0.96, "rmse": 12.5, "n": 3}' > "$ORDO_METRICS_PATH"
echo "$ORDO_OUTPUT_DIR" > "$ORDO_RESULT_PATH.dir"; printf '"%s"' "$ORDO_OUTPUT_DIR" > "$ORDO_RESULT_PATH"`)}}
		fr := b.wait(t, b.create(t, flow, nil).ID)
		h := b.tasks(t, fr)["make"]
		c := completion(t, h)
		want := []domain.Output{
			{Name: "plots/2026/residuals", SHA256: sha([]byte("\x89PNG\r\n\x1a\n0000")), Size: 12, MediaType: "image/png"},
			{Name: "report.md", SHA256: sha([]byte("# report")), Size: 8, MediaType: "text/markdown"},
			{Name: "table.csv", SHA256: sha([]byte("a,b\n1,2\n")), Size: 8, MediaType: "text/csv"},
		}
		if fmt.Sprint(c.Outputs) != fmt.Sprint(want) {
			t.Errorf("outputs\n%v\nwant\n%v", c.Outputs, want)
		}
		if fmt.Sprint(c.Metrics) != fmt.Sprint(map[string]float64{"n": 3, "r2": 0.96, "rmse": 12.5}) {
			t.Errorf("metrics %v", c.Metrics)
		}
		for _, o := range want {
			rc, err := store.Get(t.Context(), o.SHA256, 0, -1)
			if err != nil {
				t.Fatalf("output %s not stored: %v", o.Name, err)
			}
			got, err := io.ReadAll(blobstore.Verify(rc, o.SHA256, o.Size))
			rc.Close()
			if err != nil || int64(len(got)) != o.Size {
				t.Errorf("output %s stored as %d bytes: %v", o.Name, len(got), err)
			}
		}
		mustBeGone(t, c, "ORDO_OUTPUT_DIR")
		b.validate(t)
	})

	t.Run("NoOutputsNoMetrics", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{}) // no blob store: not needed
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "plain", Tasks: []domain.TaskSpec{sh("t", `: > "$ORDO_METRICS_PATH"`)}}, nil).ID)
		c := completion(t, b.tasks(t, fr)["t"])
		if c.Outputs != nil || c.Metrics != nil {
			t.Errorf("a task that wrote nothing has outputs %v and metrics %v", c.Outputs, c.Metrics)
		}
		// the attempt's directories are kept for the next, empty
		for _, d := range []string{".outputs", ".inputs"} {
			left, _ := os.ReadDir(filepath.Join(b.workspace, d))
			for _, e := range left {
				if in, _ := os.ReadDir(filepath.Join(b.workspace, d, e.Name())); len(in) != 0 {
					t.Errorf("%s/%s holds %d files after the attempt", d, e.Name(), len(in))
				}
			}
		}
	})

	t.Run("FailedAttemptLeavesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		store := dirStore(t)
		b.startWorker(t, jobs.WorkerOptions{BlobStore: store, Concurrency: 1})
		task := sh("t", `
if [ "$ORDO_ATTEMPT" = 1 ]; then printf junk > "$ORDO_OUTPUT_DIR/junk"; echo '{"a": 1}' > "$ORDO_METRICS_PATH"; exit 1; fi
test -z "$(ls -A "$ORDO_OUTPUT_DIR")" && test -z "$(ls -A "$ORDO_INPUT_DIR")"`)
		task.Retries = 1
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "retried", Tasks: []domain.TaskSpec{task}}, nil).ID)
		c := completion(t, b.tasks(t, fr)["t"])
		if c.Outputs != nil || c.Metrics != nil {
			t.Errorf("the retry completed with outputs %v and metrics %v of the failed attempt", c.Outputs, c.Metrics)
		}
		if _, err := store.Stat(t.Context(), sha([]byte("junk"))); !errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("a failed attempt's output was stored (%v)", err)
		}
		if left, _ := os.ReadDir(filepath.Join(b.workspace, ".results")); len(left) != 0 {
			t.Errorf("files left in .results: %v", left)
		}
	})

	t.Run("BadMetricsRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{BlobStore: dirStore(t)})
		for _, c := range []struct{ name, metrics, want string }{
			{"string", `{"r2": "high"}`, `metric "r2" is "high", not a finite number`},
			{"list", `[1, 2]`, `not a JSON object`},
			{"huge", `{"x": 1e400}`, `metric "x" is 1e400`},
			{"null", `{"x": null}`, `metric "x" is null`},
			{"notjson", `r2=0.9`, `not a JSON object`},
		} {
			fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "metrics-" + c.name, Tasks: []domain.TaskSpec{
				sh("t", `printf '%s' '`+c.metrics+`' > "$ORDO_METRICS_PATH"; printf x > "$ORDO_OUTPUT_DIR/x"`)}}, nil).ID)
			h := b.tasks(t, fr)["t"]
			if fr.State.Type != domain.Failed || len(h.of("TaskRunCompleted")) != 0 {
				t.Errorf("%s: run %s, want FAILED", c.name, fr.State.Type)
				continue
			}
			if msg := failure(t, h); !strings.Contains(msg, c.want) || !strings.Contains(msg, "ORDO_METRICS_PATH") {
				t.Errorf("%s: failure %q, want it to say %q", c.name, msg, c.want)
			}
		}
	})
}

// TestBadOutputs: a file in ORDO_OUTPUT_DIR that is not a regular file, or
// whose name is not an output name, fails the attempt with a message that
// names it, and nothing is stored or named.
func TestBadOutputs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	store := dirStore(t)
	b.startWorker(t, jobs.WorkerOptions{BlobStore: store})
	cases := []struct{ name, script, want string }{
		{"Symlink", `ln -s /etc/hostname "$ORDO_OUTPUT_DIR/host"`, `output "host" is a symbolic link`},
		{"EscapingDirectory", `ln -s / "$ORDO_OUTPUT_DIR/root"`, `output "root" is a symbolic link`},
		{"NestedSymlink", `mkdir "$ORDO_OUTPUT_DIR/d"; ln -s ../../.. "$ORDO_OUTPUT_DIR/d/up"`, `output "d/up" is a symbolic link`},
		{"Fifo", `mkfifo "$ORDO_OUTPUT_DIR/pipe"`, `output "pipe" is not a regular file (a named pipe)`},
		{"ControlCharacter", `printf x > "$ORDO_OUTPUT_DIR/$(printf 'a\tb')"`, `contains a NUL or another control character`},
		{"Backslash", `printf x > "$ORDO_OUTPUT_DIR/a\\b"`, `contains a backslash`},
	}
	if os.Geteuid() == 0 {
		cases = append(cases, struct{ name, script, want string }{"Device", `mknod "$ORDO_OUTPUT_DIR/null" c 1 3`, `output "null" is not a regular file (a device)`})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "bad", Tasks: []domain.TaskSpec{
				sh("t", `printf good > "$ORDO_OUTPUT_DIR/good.txt"; `+c.script)}}, nil).ID)
			h := b.tasks(t, fr)["t"]
			if fr.State.Type != domain.Failed {
				t.Fatalf("run %s, want FAILED", fr.State.Type)
			}
			if msg := failure(t, h); !strings.Contains(msg, c.want) {
				t.Errorf("failure %q, want it to say %q", msg, c.want)
			}
			if _, err := store.Stat(t.Context(), sha([]byte("good"))); !errors.Is(err, blobstore.ErrNotFound) {
				t.Errorf("a good output beside the bad one was stored (%v): the walk must refuse first", err)
			}
		})
	}
}

// TestOutputSizeCaps: an output past MaxOutputBytes, or outputs past
// MaxAttemptOutputBytes together, fail the attempt.
func TestOutputSizeCaps(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, jobs.WorkerOptions{BlobStore: dirStore(t), MaxOutputBytes: 100, MaxAttemptOutputBytes: 150})
	for _, c := range []struct{ name, script, want string }{
		{"OneOutput", `head -c 101 /dev/zero > "$ORDO_OUTPUT_DIR/big"`, `output "big" is larger than the 100 bytes`},
		{"Attempt", `head -c 100 /dev/zero > "$ORDO_OUTPUT_DIR/a"; head -c 51 /dev/zero > "$ORDO_OUTPUT_DIR/b"`, `output "b" takes the attempt's outputs past`},
		{"AtTheCaps", `head -c 100 /dev/zero > "$ORDO_OUTPUT_DIR/a"; head -c 50 /dev/zero > "$ORDO_OUTPUT_DIR/b"`, ``},
	} {
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "caps", Tasks: []domain.TaskSpec{sh("t", c.script)}}, nil).ID)
		h := b.tasks(t, fr)["t"]
		if c.want == "" {
			if outs := completion(t, h).Outputs; len(outs) != 2 {
				t.Errorf("%s: outputs %v, want a and b", c.name, outs)
			}
			continue
		}
		if fr.State.Type != domain.Failed {
			t.Errorf("%s: run %s, want FAILED", c.name, fr.State.Type)
		} else if msg := failure(t, h); !strings.Contains(msg, c.want) {
			t.Errorf("%s: failure %q, want it to say %q", c.name, msg, c.want)
		}
	}
}

// flakyStore fails the first Put of a blob after reading part of it, and
// serves Gets of corrupt digests with other bytes.
type flakyStore struct {
	blobstore.Store
	putFailures atomic.Int32 // Puts still to fail
	mu          sync.Mutex
	corrupt     map[string]bool
	gets        atomic.Int32
}

func (s *flakyStore) Put(ctx context.Context, digest string, size int64, r io.Reader) error {
	if s.putFailures.Add(-1) >= 0 {
		_, _ = io.CopyN(io.Discard, r, size/2)
		return errors.New("connection reset by peer")
	}
	return s.Store.Put(ctx, digest, size, r)
}

func (s *flakyStore) Get(ctx context.Context, digest string, off, n int64) (io.ReadCloser, error) {
	s.gets.Add(1)
	s.mu.Lock()
	bad := s.corrupt[digest]
	s.mu.Unlock()
	rc, err := s.Store.Get(ctx, digest, off, n)
	if err != nil || !bad {
		return rc, err
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return nil, err
	}
	b[0] ^= 0xff
	return io.NopCloser(bytes.NewReader(b)), nil
}

// TestStoreFailures: a store that fails mid-upload makes a normal failure
// that the task's retries retry, and no event names a blob it does not
// hold; a blob that comes back with other content is refused and fails the
// attempt that needed it, saying so.
func TestStoreFailures(t *testing.T) {
	t.Parallel()

	t.Run("UploadFailsThenRetried", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		store := &flakyStore{Store: dirStore(t)}
		store.putFailures.Store(1)
		b.startWorker(t, jobs.WorkerOptions{BlobStore: store})
		task := sh("t", `head -c 100000 /dev/urandom > "$ORDO_OUTPUT_DIR/data.bin"`)
		task.Retries = 1
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "flaky", Tasks: []domain.TaskSpec{task}}, nil).ID)
		h := b.tasks(t, fr)["t"]
		if fr.State.Type != domain.Completed || h.run.Attempt != 2 {
			t.Fatalf("run %s after %d attempts, want COMPLETED after 2", fr.State.Type, h.run.Attempt)
		}
		retry := h.of("TaskRunRetryScheduled")
		if len(retry) != 1 {
			t.Fatalf("%d retries scheduled, want 1", len(retry))
		}
		if msg := retry[0].Event.(domain.TaskRunRetryScheduled).Error; !strings.Contains(msg, `store output "data.bin"`) || !strings.Contains(msg, "connection reset by peer") {
			t.Errorf("first attempt failed with %q, want the store's failure on data.bin", msg)
		}
		if outs := completion(t, h).Outputs; len(outs) != 1 || outs[0].Size != 100000 {
			t.Errorf("outputs %v", outs)
		}
		mustHaveBlobs(t, b, fr, store)
		b.validate(t)
	})

	t.Run("DigestMismatchOnDownload", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		store := &flakyStore{Store: dirStore(t), corrupt: map[string]bool{sha([]byte("model v1")): true}}
		b.startWorker(t, jobs.WorkerOptions{BlobStore: store})
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "mismatch", Tasks: []domain.TaskSpec{
			sh("train", `printf 'model v1' > "$ORDO_OUTPUT_DIR/model.bin"`),
			sh("evaluate", `cat "$ORDO_INPUT_DIR/train/model.bin"`, "train"),
		}}, nil).ID)
		h := b.tasks(t, fr)["evaluate"]
		if fr.State.Type != domain.Failed || len(h.of("TaskRunStarted")) != 1 {
			t.Fatalf("run %s, want FAILED at evaluate's start", fr.State.Type)
		}
		if msg := failure(t, h); !strings.Contains(msg, `output "model.bin" of task train does not match its digest`) {
			t.Errorf("failure %q, want it to name the output and its task", msg)
		}
		cache := filepath.Join(b.workspace, ".blobs")
		left, _ := os.ReadDir(cache)
		if len(left) != 0 {
			t.Errorf("the blob cache holds %d files after a refused download: %v", len(left), left)
		}
	})
}

// TestInputs: the outputs of upstream tasks are materialized read-only at
// ORDO_INPUT_DIR/<task>/<name> on whichever worker runs the downstream
// task, fetched once into that worker's cache.
func TestInputs(t *testing.T) {
	t.Parallel()

	t.Run("OnAnotherWorker", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		store := &flakyStore{Store: dirStore(t)}
		wsA, wsB := t.TempDir(), t.TempDir()
		b.startWorker(t, jobs.WorkerOptions{Name: "host-a", Queues: []string{"cpu"}, WorkspaceDir: wsA, BlobStore: store})
		b.startWorker(t, jobs.WorkerOptions{Name: "host-b", Queues: []string{"gpu"}, WorkspaceDir: wsB, BlobStore: store})
		train := sh("train", `echo "$ORDO_WORKSPACE" > /dev/null; mkdir -p "$ORDO_OUTPUT_DIR/model"; printf 'weights' > "$ORDO_OUTPUT_DIR/model/weights.bin"; printf 'a,b' > "$ORDO_OUTPUT_DIR/data.csv"`)
		train.WorkQueue = "gpu"
		prep := sh("prep", `printf 'other' > "$ORDO_OUTPUT_DIR/data.csv"`)
		prep.WorkQueue = "gpu"
		evaluate := sh("evaluate", `
set -e
in="$ORDO_INPUT_DIR"
test "$(cat "$in/train/model/weights.bin")" = weights
test "$(cat "$in/train/data.csv")" = a,b
test "$(cat "$in/prep/data.csv")" = other
test "$(stat -c %a "$in/train/model/weights.bin")" = 444
test "$(stat -c %a "$in/train/model")" = 555
test "$(stat -c %a "$in")" = 555
if [ "$(id -u)" != 0 ]; then ! (printf x >> "$in/train/data.csv") 2>/dev/null; ! touch "$in/new" 2>/dev/null; fi
printf '"%s"' "$in" > "$ORDO_RESULT_PATH"`, "train", "prep")
		evaluate.WorkQueue = "cpu"
		// a second downstream task on the same worker finds the blobs cached
		again := sh("again", `test "$(cat "$ORDO_INPUT_DIR/train/model/weights.bin")" = weights`, "evaluate", "train")
		again.WorkQueue = "cpu"
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "two-hosts", Tasks: []domain.TaskSpec{train, prep, evaluate, again}}, nil).ID)
		if fr.State.Type != domain.Completed {
			for name, h := range b.tasks(t, fr) {
				if h.run.LastFailure != nil {
					t.Errorf("%s: %s", name, h.run.LastFailure.Error)
				}
			}
			t.Fatalf("run %s, want COMPLETED", fr.State.Type)
		}
		tasks := b.tasks(t, fr)
		if tasks["train"].of("TaskRunStarted")[0].Event.(domain.TaskRunStarted).Worker == tasks["evaluate"].of("TaskRunStarted")[0].Event.(domain.TaskRunStarted).Worker {
			t.Fatal("train and evaluate ran on one worker")
		}
		if n := store.gets.Load(); n != 3 {
			t.Errorf("%d downloads, want 3: each digest once on the worker that needs it", n)
		}
		cached, _ := os.ReadDir(filepath.Join(wsA, ".blobs"))
		if len(cached) != 3 {
			t.Errorf("worker A's cache holds %d files, want 3", len(cached))
		}
		mustBeGone(t, completion(t, tasks["evaluate"]), "ORDO_INPUT_DIR")
		b.validate(t)
	})

	t.Run("NoBlobStore", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, jobs.WorkerOptions{})
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "nostore", Tasks: []domain.TaskSpec{sh("t", `printf x > "$ORDO_OUTPUT_DIR/x"`)}}, nil).ID)
		if msg := failure(t, b.tasks(t, fr)["t"]); !strings.Contains(msg, "no blob store") {
			t.Errorf("failure %q, want it to say the worker has no blob store", msg)
		}
	})
}

// TestCachedOutputs: a cache hit completes with the cached task run's
// outputs and metrics, by digest, and its downstream task gets them as
// input files.
func TestCachedOutputs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	store := dirStore(t)
	b.startWorker(t, jobs.WorkerOptions{BlobStore: store})
	runs := filepath.Join(t.TempDir(), "runs")
	load := sh("load", `echo run >> `+runs+`; date +%s%N > "$ORDO_OUTPUT_DIR/data.txt"; echo '{"rows": 42}' > "$ORDO_METRICS_PATH"`)
	load.Cache = &domain.CachePolicy{Key: domain.CacheKeyInputs}
	flow := domain.FlowSpec{Name: "cached-files", Tasks: []domain.TaskSpec{load,
		sh("use", `cat "$ORDO_INPUT_DIR/load/data.txt" > "$ORDO_OUTPUT_DIR/copy.txt"`, "load")}}
	first := b.wait(t, b.create(t, flow, nil).ID)
	second := b.wait(t, b.create(t, flow, nil).ID)
	if first.State.Type != domain.Completed || second.State.Type != domain.Completed {
		t.Fatalf("runs %s and %s", first.State.Type, second.State.Type)
	}
	if n := countLines(t, runs); n != 1 {
		t.Fatalf("the cached task ran %d times", n)
	}
	made := completion(t, b.tasks(t, first)["load"])
	hits := b.tasks(t, second)["load"].of("TaskRunCached")
	if len(hits) != 1 {
		t.Fatal("the second run's load was not a cache hit")
	}
	hit := hits[0].Event.(domain.TaskRunCached)
	if fmt.Sprint(hit.Outputs) != fmt.Sprint(made.Outputs) || fmt.Sprint(hit.Metrics) != fmt.Sprint(made.Metrics) || len(hit.Outputs) != 1 {
		t.Errorf("cache hit has outputs %v and metrics %v, want the cached run's %v and %v", hit.Outputs, hit.Metrics, made.Outputs, made.Metrics)
	}
	use1, use2 := completion(t, b.tasks(t, first)["use"]), completion(t, b.tasks(t, second)["use"])
	if use2.Outputs[0].SHA256 != made.Outputs[0].SHA256 || use1.Outputs[0].SHA256 != use2.Outputs[0].SHA256 {
		t.Errorf("downstream of the hit copied %v, want the cached file %v", use2.Outputs, made.Outputs)
	}
	mustHaveBlobs(t, b, second, store)
	b.validate(t)
}

// TestHandlerFiles: Go handlers create outputs, open their inputs and
// record metrics through TaskContext.
func TestHandlerFiles(t *testing.T) {
	t.Parallel()
	b := setup(t)
	store := dirStore(t)
	var handlers jobs.Handlers
	handlers.Handle("train", func(ctx context.Context, tc jobs.TaskContext) (any, error) {
		f, err := tc.CreateOutput("model/weights.bin")
		if err != nil {
			return nil, err
		}
		if _, err := f.WriteString("fitted weights"); err != nil {
			return nil, err
		}
		tc.SetMetric("r2", 0.91)
		tc.RecordMetrics(map[string]float64{"rmse": 3.5, "r2": 0.96})
		return nil, f.Close()
	})
	handlers.Handle("evaluate", func(ctx context.Context, tc jobs.TaskContext) (any, error) {
		if len(tc.InputFiles["train"]) != 1 {
			return nil, fmt.Errorf("input files %v", tc.InputFiles)
		}
		f, err := tc.OpenInput("train", "model/weights.bin")
		if err != nil {
			return nil, err
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if _, err := tc.OpenInput("train", "missing"); err == nil || !strings.Contains(err.Error(), `task train left no output "missing"`) {
			return nil, fmt.Errorf("opening a missing input: %v", err)
		}
		return string(b), err
	})
	handlers.Handle("bad", func(ctx context.Context, tc jobs.TaskContext) (any, error) {
		if _, err := tc.CreateOutput("a\x00b"); err == nil {
			return nil, errors.New("a name with NUL was taken")
		}
		if _, err := tc.CreateOutput("../escape"); err == nil {
			return nil, errors.New("a name with .. was taken")
		}
		tc.SetMetric("loss", 0)
		tc.SetMetric("nan", math.NaN())
		return nil, nil
	})
	b.startWorker(t, jobs.WorkerOptions{BlobStore: store, Handlers: &handlers})
	fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "handlers", Tasks: []domain.TaskSpec{
		{Name: "train", Handler: "train"}, {Name: "evaluate", Handler: "evaluate", DependsOn: []string{"train"}},
	}}, nil).ID)
	tasks := b.tasks(t, fr)
	if fr.State.Type != domain.Completed {
		t.Fatalf("run %s: %+v %+v", fr.State.Type, tasks["train"].run.LastFailure, tasks["evaluate"].run.LastFailure)
	}
	c := completion(t, tasks["train"])
	if len(c.Outputs) != 1 || c.Outputs[0].Name != "model/weights.bin" || c.Outputs[0].SHA256 != sha([]byte("fitted weights")) {
		t.Errorf("train's outputs %v", c.Outputs)
	}
	if fmt.Sprint(c.Metrics) != "map[r2:0.96 rmse:3.5]" {
		t.Errorf("train's metrics %v", c.Metrics)
	}
	if got := string(completion(t, tasks["evaluate"]).Result); got != `"fitted weights"` {
		t.Errorf("evaluate read %s", got)
	}
	bad := b.wait(t, b.create(t, domain.FlowSpec{Name: "bad", Tasks: []domain.TaskSpec{{Name: "bad", Handler: "bad"}}}, nil).ID)
	if msg := failure(t, b.tasks(t, bad)["bad"]); !strings.Contains(msg, `metric "nan" is NaN`) {
		t.Errorf("bad metrics failed with %q", msg)
	}
}

// TestLeftAttemptDirsRemoved: a worker that starts removes the attempt
// directories that stopped or dead workers left beside the workspaces
// (their outputs can be large), and leaves those of running workers.
func TestLeftAttemptDirsRemoved(t *testing.T) {
	t.Parallel()
	b := setup(t)
	stopped, running := uuid.New(), uuid.New()
	if _, err := b.pool.Exec(t.Context(), `
INSERT INTO workers (id, name, queues, hostname, pid, stopped_at) VALUES ($1, 'old', '{default}', 'h', 1, now()), ($2, 'busy', '{default}', 'h', 2, NULL)`,
		stopped, running); err != nil {
		t.Fatal(err)
	}
	mk := func(dir string) string {
		p := filepath.Join(b.workspace, dir)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "model.bin"), []byte("big"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	left := []string{mk(".outputs/" + stopped.String() + "-0001"), mk(".inputs/" + stopped.String() + "-0002/train")}
	busy := mk(".outputs/" + running.String() + "-0003")
	b.startWorker(t, jobs.WorkerOptions{})
	waitUntil(t, 10*time.Second, "left directories removed", func() bool {
		_, err1 := os.Stat(left[0])
		_, err2 := os.Stat(filepath.Dir(left[1]))
		return errors.Is(err1, os.ErrNotExist) && errors.Is(err2, os.ErrNotExist)
	})
	if _, err := os.Stat(busy); err != nil {
		t.Errorf("the directory of a running worker was removed: %v", err)
	}
}
