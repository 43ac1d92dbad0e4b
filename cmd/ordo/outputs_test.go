package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/projections/projtest"
)

// putOutput stores content in a blob store and describes it as an output.
func putOutput(t *testing.T, blobs blobstore.Store, name, mediaType string, content []byte) domain.Output {
	t.Helper()
	sum := sha256.Sum256(content)
	d := hex.EncodeToString(sum[:])
	if err := blobs.Put(context.Background(), d, int64(len(content)), bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	return domain.Output{Name: name, SHA256: d, Size: int64(len(content)), MediaType: mediaType}
}

// outputsCluster starts a server on a directory blob store and writes a
// run whose two tasks completed with outputs (blobs stored) and metrics.
func outputsCluster(t *testing.T) (c *cluster, runName, blobDir string, outs []domain.Output) {
	t.Helper()
	blobDir = t.TempDir()
	c = startCluster(t, "--blob-store", "file://"+blobDir)
	blobs, err := blobstore.OpenDir(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, c.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := eventstore.New(pool, domain.NewRegistry())
	t.Cleanup(store.Close)
	outs = []domain.Output{
		putOutput(t, blobs, "model.pkl", "application/octet-stream", []byte(strings.Repeat("weights ", 1000))),
		putOutput(t, blobs, "reports/évaluation.md", "text/markdown", []byte("# R² 0.96\n")),
	}
	runName = "outputs-run"
	run := projtest.NewLog(t, store).CreateRun(projtest.RunSpec{Name: runName, Flow: domain.FlowSpec{Name: "ml", Tasks: []domain.TaskSpec{
		{Name: "train", Command: []string{"true"}},
		{Name: "evaluate", Command: []string{"true"}, DependsOn: []string{"train"}},
	}}})
	run.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
	run.Task("train", domain.TaskRunStarted{Attempt: 1, Worker: "w1"}, domain.TaskRunCompleted{Attempt: 1, Outputs: outs[:1]})
	run.Task("evaluate", domain.TaskRunStarted{Attempt: 1, Worker: "w1"},
		domain.TaskRunCompleted{Attempt: 1, Outputs: outs[1:], Metrics: map[string]float64{"r2": 0.96, "rmse": 12.5}})
	run.Flow(domain.FlowRunCompleted{})
	return c, runName, blobDir, outs
}

func TestRunOutputsCommand(t *testing.T) {
	t.Parallel()
	c, run, blobDir, outs := outputsCluster(t)

	// the projector may be a moment behind the events written above
	var show string
	for i := 0; i < 100 && !strings.Contains(show, "metrics: r2=0.96 rmse=12.5"); i++ {
		show, _ = c.ordoCode("runs", "show", run)
	}
	if !strings.Contains(show, "metrics: r2=0.96 rmse=12.5") || !strings.Contains(show, "evaluate  reports/évaluation.md") {
		t.Errorf("ordo runs show:\n%s", show)
	}
	if ls := c.ordo("runs", "ls", "--metric", "r2"); !strings.Contains(ls, "R2") || !strings.Contains(ls, "0.96") {
		t.Errorf("ordo runs ls --metric r2:\n%s", ls)
	}
	list := c.ordo("runs", "outputs", run)
	if !strings.Contains(list, "train     model.pkl") || !strings.Contains(list, outs[1].SHA256) || !strings.Contains(list, "7.8 KiB") {
		t.Errorf("ordo runs outputs:\n%s", list)
	}

	dir := t.TempDir()
	c.ordo("runs", "outputs", run, "--download", dir)
	for task, o := range map[string]domain.Output{"train": outs[0], "evaluate": outs[1]} {
		b, err := os.ReadFile(filepath.Join(dir, task, filepath.FromSlash(o.Name)))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != o.SHA256 {
			t.Errorf("%s/%s downloaded with other bytes", task, o.Name)
		}
	}

	// a blob damaged in the store: the download fails, naming the output,
	// and leaves no file behind
	blob := filepath.Join(blobDir, "sha256", outs[0].SHA256[:2], outs[0].SHA256)
	damaged := bytes.Repeat([]byte("x"), int(outs[0].Size))
	if err := os.WriteFile(blob, damaged, 0o644); err != nil {
		t.Fatal(err)
	}
	dir2 := t.TempDir()
	out, code := c.ordoCode("runs", "outputs", run, "--download", dir2)
	if code == 0 || !strings.Contains(out, `output "model.pkl" of task train`) || !strings.Contains(out, "do not match") {
		t.Errorf("a damaged blob: exit %d\n%s", code, out)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir2, "train")); len(entries) != 0 {
		t.Errorf("a damaged download left %v", entries)
	}
}
