package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/ordoflow/ordo/internal/seaweed"
)

// TestEndToEndFilesBetweenHostsOnS3 is the two-host run with the blob
// store on a real S3-compatible server (SeaweedFS's S3 gateway, started by
// the test): the server and both workers open s3://bucket/prefix from the
// usual AWS variables, and the model written on one host is read whole on
// the other, with the deployment of TestEndToEndFilesBetweenWorkers: a
// cheap check of what the ML example on S3 (TestEndToEndMLPipelineOnS3)
// does not look at, that every byte read is the byte written.
func TestEndToEndFilesBetweenHostsOnS3(t *testing.T) {
	t.Parallel()
	s3 := seaweed.Shared(t)
	prefix := "e2e-" + t.Name()
	c := startClusterEnv(t, []string{
		"ORDO_BLOB_STORE=s3://" + seaweed.TestBucket + "/" + prefix,
		"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey,
		"AWS_ENDPOINT_URL_S3=" + s3.Endpoint, "AWS_REGION=us-east-1",
	})
	for _, w := range []struct{ name, queue string }{{"cpu-host", "cpu"}, {"gpu-host", "gpu"}} {
		c.start("worker", "-q", w.queue, "--name", w.name, "--workspace-dir", filepath.Join(c.dir, "ws-"+w.name))
	}
	c.ordo("deploy", "-f", c.writeFile("two-hosts.yaml", twoHostsDeployment))
	out, code := c.ordoCode("run", "two-hosts", "--watch")
	if code != 0 {
		t.Fatalf("the run did not complete (exit %d):\n%s", code, out)
	}
	runID := runIDFrom(t, out)

	if m := checkTwoHostsMetrics(t, c, runID); m["r2"] != 0.96 {
		t.Errorf("run metrics %v: want evaluate's r2", m)
	}
	if got := runOutputs(t, c, runID); len(got) != 2 || !got["train/model/weights.bin"] || !got["evaluate/seen.txt"] {
		t.Errorf("outputs %v, want train/model/weights.bin and evaluate/seen.txt", got)
	}
	dir := t.TempDir()
	c.ordo("runs", "outputs", runID, "--download", dir) // verifies each file's digest
	model, err := os.ReadFile(filepath.Join(dir, "train", "model", "weights.bin"))
	if err != nil || !strings.HasPrefix(string(model), "weights of ") {
		t.Fatalf("the model did not download: %q, %v", model, err)
	}
	if seen, err := os.ReadFile(filepath.Join(dir, "evaluate", "seen.txt")); err != nil || string(seen) != string(model) {
		t.Errorf("evaluate read %q, want the model train wrote, %q (%v)", seen, model, err)
	}
	// the model never went through a workspace
	if m, _ := filepath.Glob(filepath.Join(c.dir, "ws-*", "*", "model", "weights.bin")); len(m) != 0 {
		t.Errorf("the model is in a workspace: %v", m)
	}

	// the files are in the bucket, under the prefix
	stored := bucketBlobs(t, s3, prefix)
	if stored != 1 {
		t.Errorf("the bucket holds %d blobs under %s, want 1: the model and evaluate's copy of it, the same bytes stored once", stored, prefix)
	}
	c.validateLog()
}

// bucketBlobs counts the blobs stored under prefix in the test bucket.
func bucketBlobs(t *testing.T, s3 *seaweed.Server, prefix string) int {
	t.Helper()
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
	return stored
}
