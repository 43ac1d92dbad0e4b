package blobstore

import (
	"context"
	"fmt"
	"net/url"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Open opens the store a URL names (the value of ORDO_BLOB_STORE):
//
//	"" or "postgres"        blobs in PostgreSQL, through pool (the default)
//	file:///path            a directory, local or mounted by every worker
//	s3://bucket/prefix      any S3-compatible service, configured by the
//	                        AWS environment variables (S3ConfigFromEnv)
func Open(ctx context.Context, rawURL string, pool *pgxpool.Pool) (Store, error) {
	if rawURL == "" || rawURL == "postgres" {
		if pool == nil {
			return nil, fmt.Errorf("ORDO_BLOB_STORE %q: the postgres blob store needs a database", rawURL)
		}
		return NewPostgres(pool), nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("ORDO_BLOB_STORE %q is not a URL: %w", rawURL, err)
	}
	switch u.Scheme {
	case "file":
		if u.Path == "" {
			return nil, fmt.Errorf("ORDO_BLOB_STORE %q names no directory: write file:///absolute/path", rawURL)
		}
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("ORDO_BLOB_STORE %q names host %q: write file:///absolute/path", rawURL, u.Host)
		}
		return OpenDir(u.Path)
	case "s3":
		if u.Host == "" {
			return nil, fmt.Errorf("ORDO_BLOB_STORE %q names no bucket: write s3://bucket/prefix", rawURL)
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("ORDO_BLOB_STORE %q: write s3://bucket/prefix, with credentials and endpoint in AWS_* variables", u.Redacted())
		}
		s, err := OpenS3(ctx, S3ConfigFromEnv(u, os.Getenv))
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("ORDO_BLOB_STORE %q: unknown scheme %q (use postgres, file:///path or s3://bucket/prefix)", u.Redacted(), u.Scheme)
}
