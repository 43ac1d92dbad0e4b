package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/ordoflow/ordo/internal/seaweed"
)

// s3Deployment trains on the gpu host and evaluates on the other: the
// model reaches evaluate only through the blob store, and the report
// holds the digest of the model evaluate read.
const s3Deployment = `
name: s3-two-hosts
work_queue: ml
flow:
  name: s3-two-hosts
  tasks:
    - name: train
      work_queue: gpu
      command: [sh, -c, 'mkdir "$ORDO_OUTPUT_DIR/model" && head -c 1048576 /dev/urandom > "$ORDO_OUTPUT_DIR/model/weights.bin"']
    - name: evaluate
      depends_on: [train]
      command: [sh, -c, 'sha256sum "$ORDO_INPUT_DIR/train/model/weights.bin" > "$ORDO_OUTPUT_DIR/report.md" && echo "{\"r2\": 0.96}" > "$ORDO_METRICS_PATH"']
`

// TestEndToEndFilesBetweenHostsOnS3 is the two-host run with the blob
// store on a real S3-compatible server (SeaweedFS's S3 gateway, started by
// the test): the server and both workers open s3://bucket/prefix from the
// usual AWS variables, and the model written on one host is read whole on
// the other. (TestEndToEndMLPipeline runs the ML example itself, on the
// default store, which this store stands in for.)
func TestEndToEndFilesBetweenHostsOnS3(t *testing.T) {
	t.Parallel()
	s3 := seaweed.Shared(t)
	prefix := "e2e-" + t.Name()
	c := startClusterEnv(t, []string{
		"ORDO_BLOB_STORE=s3://" + seaweed.TestBucket + "/" + prefix,
		"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey,
		"AWS_ENDPOINT_URL_S3=" + s3.Endpoint, "AWS_REGION=us-east-1",
	})
	startMLWorkers(t, c)
	c.ordo("deploy", "-f", c.writeFile("s3-two-hosts.yaml", s3Deployment))
	out, code := c.ordoCode("run", "s3-two-hosts", "--watch")
	if code != 0 {
		t.Fatalf("the run did not complete (exit %d):\n%s", code, out)
	}
	runID := runIDFrom(t, out)

	on := ranOn(t, c, runID)
	if !strings.HasPrefix(on["train"], "gpu-host") || !strings.HasPrefix(on["evaluate"], "cpu-host") {
		t.Errorf("train ran on %q and evaluate on %q; want the gpu host, then the other", on["train"], on["evaluate"])
	}
	var run struct {
		Metrics map[string]float64 `json:"metrics"`
	}
	getJSON(t, c, "/runs/"+runID, &run)
	if run.Metrics["r2"] != 0.96 {
		t.Errorf("run metrics %v: want evaluate's r2", run.Metrics)
	}
	var outputs struct {
		Items []struct {
			TaskName string `json:"task_name"`
			Name     string `json:"name"`
		} `json:"items"`
	}
	getJSON(t, c, "/runs/"+runID+"/outputs", &outputs)
	got := map[string]bool{}
	for _, o := range outputs.Items {
		got[o.TaskName+"/"+o.Name] = true
	}
	if len(got) != 2 || !got["train/model/weights.bin"] || !got["evaluate/report.md"] {
		t.Errorf("outputs %v, want train/model/weights.bin and evaluate/report.md", got)
	}
	dir := t.TempDir()
	c.ordo("runs", "outputs", runID, "--download", dir) // verifies each file's digest
	model, err := os.ReadFile(filepath.Join(dir, "train", "model", "weights.bin"))
	if err != nil || len(model) != 1<<20 {
		t.Fatalf("the model did not download whole (%d bytes): %v", len(model), err)
	}
	report, err := os.ReadFile(filepath.Join(dir, "evaluate", "report.md"))
	sum := sha256.Sum256(model)
	if err != nil || !strings.HasPrefix(string(report), hex.EncodeToString(sum[:])) {
		t.Errorf("evaluate read another model than train wrote: report %q, %v", report, err)
	}
	// the model never went through a workspace
	if m, _ := filepath.Glob(filepath.Join(c.dir, "ws-*", "*", "model", "weights.bin")); len(m) != 0 {
		t.Errorf("the model is in a workspace: %v", m)
	}

	// the files are in the bucket, under the prefix
	cl, err := s3.Client()
	if err != nil {
		t.Fatal(err)
	}
	var stored int
	for obj := range cl.ListObjects(context.Background(), seaweed.TestBucket, minio.ListObjectsOptions{Prefix: prefix + "/sha256/", Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		stored++
	}
	if stored != 2 {
		t.Errorf("the bucket holds %d blobs under %s, want the run's 2 files", stored, prefix)
	}
	c.validateLog()
}
