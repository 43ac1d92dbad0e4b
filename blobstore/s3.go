package blobstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config says where an S3 store is and how to sign in. S3ConfigFromEnv
// reads it from the usual AWS environment variables.
type S3Config struct {
	// Bucket holds the blobs. Required; it must exist.
	Bucket string
	// Prefix is put before every key (keys are <prefix>/sha256/<digest>).
	// Optional.
	Prefix string
	// Endpoint is the service's URL, e.g. http://127.0.0.1:8333 (http://
	// means no TLS). A custom endpoint is addressed path-style. Defaults
	// to AWS S3.
	Endpoint string
	// Region of the bucket. Defaults to asking the service.
	Region string
	// AccessKeyID, SecretAccessKey and SessionToken sign the requests.
	// Without an access key, the credentials come from the AWS
	// environment variables, ~/.aws/credentials, then the instance's role.
	AccessKeyID, SecretAccessKey, SessionToken string
	// PartSize is the size of each part of a multipart upload, which a
	// blob larger than one part is stored with. Defaults to 8 MiB.
	PartSize int64
	// Parallel is how many parts are read and uploaded at once: a Put
	// holds Parallel parts in memory at most. Defaults to 4.
	Parallel int
	// MaxRetries is how many times a request is tried before it fails.
	// Defaults to 5.
	MaxRetries int
}

// S3ConfigFromEnv reads an s3://bucket/prefix URL and the environment:
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION
// (or AWS_DEFAULT_REGION) and the endpoint AWS_ENDPOINT_URL_S3 (or
// AWS_ENDPOINT_URL).
func S3ConfigFromEnv(u *url.URL, getenv func(string) string) S3Config {
	first := func(names ...string) string {
		for _, n := range names {
			if v := getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	return S3Config{
		Bucket:          u.Host,
		Prefix:          strings.Trim(u.Path, "/"),
		Endpoint:        first("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
		Region:          first("AWS_REGION", "AWS_DEFAULT_REGION"),
		AccessKeyID:     getenv("AWS_ACCESS_KEY_ID"),
		SecretAccessKey: getenv("AWS_SECRET_ACCESS_KEY"),
		SessionToken:    getenv("AWS_SESSION_TOKEN"),
	}
}

// S3 is a store in a bucket of any S3-compatible service. A blob is one
// object at <prefix>/sha256/<digest>. A Put checks the content against the
// digest before the object exists under its key: a blob of one part is
// read and hashed in memory before it is sent, a larger one is uploaded in
// parts and the upload is completed only when the whole content matched
// (and aborted otherwise), so an interrupted or mismatching Put leaves no
// object behind (an aborted or abandoned multipart upload is not an
// object; a bucket lifecycle rule removes abandoned ones).
type S3 struct {
	core     minio.Core
	bucket   string
	prefix   string // "" or ending in "/"
	where    string // s3://bucket/prefix at the endpoint, for errors
	partSize int64
	parallel int
	parts    sync.Pool // *[]byte of partSize
}

// OpenS3 opens a store and checks that its bucket can be reached.
func OpenS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3 blob store: no bucket named (write s3://bucket/prefix)")
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = 8 << 20
	}
	if cfg.PartSize < 5<<20 {
		return nil, fmt.Errorf("s3 blob store: PartSize %d is below the 5 MiB S3 requires", cfg.PartSize)
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 4
	}
	if cfg.MaxRetries <= 0 {
		cfg.MaxRetries = 5
	}
	s := &S3{bucket: cfg.Bucket, partSize: cfg.PartSize, parallel: cfg.Parallel}
	if cfg.Prefix = strings.Trim(cfg.Prefix, "/"); cfg.Prefix != "" {
		s.prefix = cfg.Prefix + "/"
	}
	s.where = "s3://" + path.Join(cfg.Bucket, cfg.Prefix)
	s.parts.New = func() any { b := make([]byte, s.partSize); return &b }

	endpoint, secure, lookup := "s3.amazonaws.com", true, minio.BucketLookupAuto
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("s3 blob store: endpoint %q is not an http:// or https:// URL", cfg.Endpoint)
		}
		endpoint, secure, lookup = u.Host, u.Scheme == "https", minio.BucketLookupPath
		s.where += " at " + u.Scheme + "://" + u.Host
	}
	var creds *credentials.Credentials
	if cfg.AccessKeyID != "" {
		creds = credentials.NewStaticV4(cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken)
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{}, &credentials.FileAWSCredentials{}, &credentials.IAM{},
		})
	}
	client, err := minio.New(endpoint, &minio.Options{
		Creds: creds, Secure: secure, Region: cfg.Region, BucketLookup: lookup, MaxRetries: cfg.MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 blob store %s: %w", s.where, err)
	}
	s.core = minio.Core{Client: client}
	ok, err := client.BucketExists(ctx, s.bucket)
	if err != nil {
		return nil, s.fail("open", "", err)
	}
	if !ok {
		return nil, fmt.Errorf("s3 blob store %s: bucket %q does not exist", s.where, s.bucket)
	}
	return s, nil
}

// Prefix is what every key of the store starts with ("" or ending in /).
func (s *S3) Prefix() string { return s.prefix }

func (s *S3) key(digest string) string { return s.prefix + "sha256/" + digest }

// markerKey is the empty object written each time a stored blob is stored
// again: its time is when that happened.
func (s *S3) markerKey(digest string) string { return s.prefix + "stored/" + digest }

func (s *S3) mark(ctx context.Context, digest string) error {
	if _, err := s.core.Client.PutObject(ctx, s.bucket, s.markerKey(digest), bytes.NewReader(nil), 0, minio.PutObjectOptions{}); err != nil {
		return s.fail("put", digest, err)
	}
	return nil
}

// storedAgainSince reports whether the blob was stored again at or after
// before.
func (s *S3) storedAgainSince(ctx context.Context, digest string, before time.Time) (bool, error) {
	info, err := s.core.StatObject(ctx, s.bucket, s.markerKey(digest), minio.StatObjectOptions{})
	if err != nil {
		if errors.Is(s.fail("stat", digest, err), ErrNotFound) {
			return false, nil
		}
		return false, s.fail("stat", digest, err)
	}
	return !info.LastModified.Before(before), nil
}

// fail names the store and says what the service's error means.
func (s *S3) fail(op, digest string, err error) error {
	what := op
	if digest != "" {
		what += " blob " + digest
	}
	var (
		resp   = minio.ToErrorResponse(err)
		netErr net.Error
	)
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("s3 blob store %s: %s: %w", s.where, what, err)
	case resp.Code == "NoSuchKey" || resp.StatusCode == http.StatusNotFound && resp.Code != "NoSuchBucket":
		return fmt.Errorf("blob %s: %w", digest, ErrNotFound)
	case resp.Code == "NoSuchBucket":
		return fmt.Errorf("s3 blob store %s: %s: bucket %q does not exist", s.where, what, s.bucket)
	case resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch" || resp.Code == "AccessDenied" ||
		resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("s3 blob store %s: %s: the service refused the credentials (%s: %s)", s.where, what, resp.Code, resp.Message)
	case errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("s3 blob store %s: %s: the service cannot be reached: %w", s.where, what, err)
	}
	return fmt.Errorf("s3 blob store %s: %s: %w", s.where, what, err)
}

func (s *S3) Put(ctx context.Context, digest string, size int64, r io.Reader) error {
	if err := checkDigest(digest); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("put blob %s: negative size %d", digest, size)
	}
	if b, err := s.Stat(ctx, digest); err == nil && b.Size == size {
		// stored again: the marker's time keeps a prune from taking it
		// before the event that will name it (an object's own time cannot
		// be moved without copying it)
		return s.mark(ctx, digest)
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	hr := newHashingReader(io.LimitReader(contextReader{ctx, r}, size+1))
	if size <= s.partSize {
		return s.putOne(ctx, digest, size, hr)
	}
	return s.putParts(ctx, digest, size, hr)
}

// putOne sends a blob of at most one part in one request, after it has
// read and checked the whole of it.
func (s *S3) putOne(ctx context.Context, digest string, size int64, hr *hashingReader) error {
	var buf []byte
	if size < 64<<10 {
		buf = make([]byte, size)
	} else {
		bp := s.parts.Get().(*[]byte)
		defer s.parts.Put(bp)
		buf = (*bp)[:size]
	}
	if _, err := io.ReadFull(hr, buf); err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	if _, err := io.Copy(io.Discard, hr); err != nil { // one byte too many is a mismatch
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	if err := hr.check(digest, size); err != nil {
		return err
	}
	// The digest is the payload's SHA-256, which the service checks too.
	_, err := s.core.PutObject(ctx, s.bucket, s.key(digest), bytes.NewReader(buf), size, "", digest,
		minio.PutObjectOptions{ContentType: "application/octet-stream", DisableContentSha256: true})
	if err != nil {
		return s.fail("put", digest, err)
	}
	return nil
}

// putParts uploads a blob in parts, s.parallel at a time, and completes the
// upload only once the whole content matched its digest.
func (s *S3) putParts(ctx context.Context, digest string, size int64, hr *hashingReader) (err error) {
	key := s.key(digest)
	id, err := s.core.NewMultipartUpload(ctx, s.bucket, key, minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return s.fail("put", digest, err)
	}
	defer func() {
		if err != nil {
			_ = s.core.AbortMultipartUpload(context.WithoutCancel(ctx), s.bucket, key, id)
		}
	}()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg     sync.WaitGroup
		slots  = make(chan struct{}, s.parallel)
		mu     sync.Mutex
		parts  []minio.CompletePart
		upload error
	)
	read := int64(0)
	for number := 1; read < size; number++ {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		bp := s.parts.Get().(*[]byte)
		n, rerr := io.ReadFull(hr, (*bp)[:min(s.partSize, size-read)])
		read += int64(n)
		if rerr != nil {
			s.parts.Put(bp)
			<-slots
			if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
				break // fewer bytes than size: check says so below
			}
			cancel(rerr)
			break
		}
		wg.Add(1)
		go func(number int, part []byte) {
			defer wg.Done()
			defer func() { s.parts.Put(bp); <-slots }()
			p, err := s.core.PutObjectPart(ctx, s.bucket, key, id, number, bytes.NewReader(part), int64(len(part)),
				minio.PutObjectPartOptions{DisableContentSha256: true})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if upload == nil {
					upload = err
				}
				cancel(err)
				return
			}
			parts = append(parts, minio.CompletePart{PartNumber: number, ETag: p.ETag})
		}(number, (*bp)[:n])
	}
	wg.Wait()
	if upload != nil {
		return s.fail("put", digest, upload)
	}
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	if _, err := io.Copy(io.Discard, hr); err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	if err := hr.check(digest, size); err != nil {
		return err
	}
	slices.SortFunc(parts, func(a, b minio.CompletePart) int { return a.PartNumber - b.PartNumber })
	if _, err := s.core.CompleteMultipartUpload(ctx, s.bucket, key, id, parts, minio.PutObjectOptions{}); err != nil {
		return s.fail("put", digest, err)
	}
	return nil
}

func (s *S3) Get(ctx context.Context, digest string, off, n int64) (io.ReadCloser, error) {
	if err := checkDigest(digest); err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fmt.Errorf("get blob %s: negative offset %d", digest, off)
	}
	if n == 0 {
		if _, err := s.Stat(ctx, digest); err != nil {
			return nil, err
		}
		return io.NopCloser(&io.LimitedReader{}), nil
	}
	var opts minio.GetObjectOptions
	if off > 0 || n > 0 {
		end := int64(0) // to the end
		if n > 0 {
			end = off + n - 1
		}
		if err := opts.SetRange(off, end); err != nil {
			return nil, err
		}
	}
	body, _, _, err := s.core.GetObject(ctx, s.bucket, s.key(digest), opts)
	if resp := minio.ToErrorResponse(err); resp.Code == "InvalidRange" || resp.StatusCode == http.StatusRequestedRangeNotSatisfiable {
		// From beyond the end: nothing to read, if the blob is there.
		if _, err := s.Stat(ctx, digest); err != nil {
			return nil, err
		}
		return io.NopCloser(&io.LimitedReader{}), nil
	}
	if err != nil {
		return nil, s.fail("get", digest, err)
	}
	return body, nil
}

func (s *S3) Stat(ctx context.Context, digest string) (Blob, error) {
	if err := checkDigest(digest); err != nil {
		return Blob{}, err
	}
	info, err := s.core.StatObject(ctx, s.bucket, s.key(digest), minio.StatObjectOptions{})
	if err != nil {
		return Blob{}, s.fail("stat", digest, err)
	}
	return Blob{Digest: digest, Size: info.Size, CreatedAt: info.LastModified}, nil
}

func (s *S3) Delete(ctx context.Context, digest string) error {
	if err := checkDigest(digest); err != nil {
		return err
	}
	for _, key := range []string{s.key(digest), s.markerKey(digest)} {
		if err := s.core.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}); err != nil && !errors.Is(s.fail("delete", digest, err), ErrNotFound) {
			return s.fail("delete", digest, err)
		}
	}
	return nil
}

// DeleteIfBefore deletes a blob unless it was stored, or stored again,
// at or after before, and reports whether it deleted it. S3 has no delete
// on a condition of time: a Put in the round trip between the look and
// the delete can still lose its blob (prune's grace period is what makes
// that rare).
func (s *S3) DeleteIfBefore(ctx context.Context, digest string, before time.Time) (bool, error) {
	b, err := s.Stat(ctx, digest)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !b.CreatedAt.Before(before) {
		return false, nil
	}
	if again, err := s.storedAgainSince(ctx, digest, before); err != nil || again {
		return false, err
	}
	return true, s.Delete(ctx, digest)
}

func (s *S3) List(ctx context.Context, before time.Time, fn func(Blob) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for obj := range s.core.Client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + "sha256/", Recursive: true}) {
		if obj.Err != nil {
			return s.fail("list", "", obj.Err)
		}
		d := path.Base(obj.Key)
		if !ValidDigest(d) || obj.Key != s.key(d) || !obj.LastModified.Before(before) {
			continue
		}
		if again, err := s.storedAgainSince(ctx, d, before); err != nil {
			return err
		} else if again {
			continue
		}
		if err := fn(Blob{Digest: d, Size: obj.Size, CreatedAt: obj.LastModified}); err != nil {
			return err
		}
	}
	return nil
}

func (s *S3) Close() error { return nil }
