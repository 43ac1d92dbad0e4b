package seaweed_test

import (
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/ordoflow/ordo/internal/seaweed"
)

// TestStartServesS3AndStopEndsIt: the gateway stores and returns an object
// with the identity it was given, refuses another, and Stop leaves no
// process of the group behind.
func TestStartServesS3AndStopEndsIt(t *testing.T) {
	seaweed.Need(t)
	srv, err := seaweed.Start(t.Context(), seaweed.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			srv.Stop()
		}
	}()
	if err := srv.CreateBucket(t.Context(), "bucket"); err != nil {
		t.Fatal(err)
	}
	client, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.PutObject(t.Context(), "bucket", "k", strings.NewReader("hello"), 5, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	obj, err := client.GetObject(t.Context(), "bucket", "k", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read back %q, %v", got, err)
	}
	stranger, err := minio.New(strings.TrimPrefix(srv.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(srv.AccessKey, "not-"+srv.SecretKey, ""), BucketLookup: minio.BucketLookupPath, Region: "us-east-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stranger.StatObject(t.Context(), "bucket", "k", minio.StatObjectOptions{}); err == nil {
		t.Error("the gateway let a wrong secret read an object")
	}

	pid := srv.Pid()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("after Stop, signalling weed's process group: %v, want ESRCH (no process left)", err)
	}
}
