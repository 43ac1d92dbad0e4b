package main

import (
	"os"
	"os/exec"
	"testing"

	"github.com/ordoflow/ordo/internal/seaweed"
)

// TestEndToEndMLPipelineOnS3 is the two-host ML run with the blob store on
// a real S3-compatible server (SeaweedFS's S3 gateway, started by the
// test): the server and both workers open s3://bucket/prefix from the
// usual AWS variables, and the model trained on one host is evaluated on
// the other.
func TestEndToEndMLPipelineOnS3(t *testing.T) {
	t.Parallel()
	path := debianPython(t)
	s3 := seaweed.Shared(t)
	prefix := "ml-e2e-" + t.Name()
	c := startClusterEnv(t, []string{
		"ORDO_BLOB_STORE=s3://" + seaweed.TestBucket + "/" + prefix,
		"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey,
		"AWS_ENDPOINT_URL_S3=" + s3.Endpoint, "AWS_REGION=us-east-1",
	})
	seed := exec.Command("/usr/bin/python3", "../../examples/ml-pipeline/seed.py", "--rows", "2000")
	seed.Env = append(os.Environ(), "ML_DATABASE_URL="+c.dbURL)
	if out, err := seed.CombinedOutput(); err != nil {
		t.Fatalf("seed: %v\n%s", err, out)
	}
	startMLWorkers(t, c, path, "ML_DATABASE_URL="+c.dbURL)
	runID := runMLPipeline(t, c)
	checkMLDataPlane(t, c, runID)

	// the files are in the bucket, under the prefix, and nowhere else
	stored := bucketBlobs(t, s3, prefix)
	if stored < 7 { // raw, features, train, test, model, report, plot
		t.Errorf("the bucket holds %d blobs under %s, want the run's 7 files at least", stored, prefix)
	}
	c.validateLog()
}
