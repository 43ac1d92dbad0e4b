package blobstore_test

import (
	"net"
	"strings"
	"testing"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/internal/seaweed"
)

// TestOpenRefusesBadURLs: each mistake in ORDO_BLOB_STORE is an error that
// quotes the value and says what to write, and never shows a password.
func TestOpenRefusesBadURLs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, url string
		want      string
	}{
		{"PostgresWithoutDatabase", "postgres", "needs a database"},
		{"NotAURL", "s3://bucket/%zz", "is not a URL"},
		{"UnknownScheme", "ftp://host/blobs", `unknown scheme "ftp"`},
		{"FileWithoutPath", "file://", "names no directory"},
		{"FileOnAnotherHost", "file://server/blobs", `names host "server"`},
		{"S3WithoutBucket", "s3:///prefix", "names no bucket"},
		{"S3WithCredentials", "s3://key:hunter2@bucket/prefix", "AWS_* variables"},
		{"S3WithQuery", "s3://bucket/prefix?region=eu-west-1", "AWS_* variables"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := blobstore.Open(t.Context(), tc.url, nil)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) = nil error", tc.url)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "ORDO_BLOB_STORE") {
				t.Errorf("Open(%q) = %v, want an error about ORDO_BLOB_STORE saying %q", tc.url, err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("Open(%q) = %v, which shows the password", tc.url, err)
			}
		})
	}
}

// TestOpenEachScheme: the default is the postgres backend, file:// a
// directory, s3:// a bucket configured by the AWS variables.
func TestOpenEachScheme(t *testing.T) {
	pool := pgtest.Pool(t)
	for _, url := range []string{"", "postgres"} {
		s, err := blobstore.Open(t.Context(), url, pool)
		if _, ok := s.(*blobstore.Postgres); err != nil || !ok {
			t.Errorf("Open(%q) = %T, %v; want the postgres store", url, s, err)
		}
	}
	dir := t.TempDir()
	if s, err := blobstore.Open(t.Context(), "file://"+dir, nil); err != nil {
		t.Errorf("Open(file://%s): %v", dir, err)
	} else if _, ok := s.(*blobstore.Dir); !ok {
		t.Errorf("Open(file://) = %T, want a directory store", s)
	}

	srv := seaweed.Shared(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1") // the S3-specific one wins
	t.Setenv("AWS_ENDPOINT_URL_S3", srv.Endpoint)
	s, err := blobstore.Open(t.Context(), "s3://"+seaweed.TestBucket+"/open-test", nil)
	if err != nil {
		t.Fatalf("Open(s3://): %v", err)
	}
	b := newBlob(t, 20, 100)
	put(t, s, b)
	if got := read(t, s, b.digest, 0, -1); string(got) != string(b.bytes(t)) {
		t.Error("s3 store from Open: content read back differs")
	}
}

// TestS3ErrorsNameTheStore: a missing bucket, refused credentials and an
// endpoint that does not answer each fail Open with an error that names
// the bucket and the endpoint, says which it is, and does not show the
// secret.
func TestS3ErrorsNameTheStore(t *testing.T) {
	t.Parallel()
	srv := seaweed.Shared(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	for _, tc := range []struct {
		name     string
		cfg      blobstore.S3Config
		want     string
		endpoint string
	}{
		{"NoSuchBucket", blobstore.S3Config{Bucket: "no-such-bucket", AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey},
			`bucket "no-such-bucket" does not exist`, srv.Endpoint},
		{"WrongSecret", blobstore.S3Config{Bucket: seaweed.TestBucket, AccessKeyID: srv.AccessKey, SecretAccessKey: "wrong-" + srv.SecretKey},
			"refused the credentials", srv.Endpoint},
		{"UnknownKey", blobstore.S3Config{Bucket: seaweed.TestBucket, AccessKeyID: "nobody", SecretAccessKey: "wrong-" + srv.SecretKey},
			"refused the credentials", srv.Endpoint},
		{"Unreachable", blobstore.S3Config{Bucket: seaweed.TestBucket, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, MaxRetries: 1},
			"cannot be reached", closed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.Endpoint, tc.cfg.Region, tc.cfg.Prefix = tc.endpoint, "us-east-1", "p"
			s, err := blobstore.OpenS3(t.Context(), tc.cfg)
			if err == nil {
				s.Close()
				t.Fatal("OpenS3 = nil error")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "s3://"+tc.cfg.Bucket+"/p") || !strings.Contains(msg, tc.endpoint) {
				t.Errorf("OpenS3: %v\nwant it to say %q and name s3://%s/p at %s", err, tc.want, tc.cfg.Bucket, tc.endpoint)
			}
			if strings.Contains(msg, srv.SecretKey) {
				t.Errorf("OpenS3: %v shows the secret", err)
			}
		})
	}
}
