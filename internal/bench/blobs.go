package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/internal/seaweed"
)

// BlobRound is one round of a blob scenario: a blob stored through a
// backend and read back (and verified, as a worker does), and the same
// bytes through the baseline, one right after the other.
type BlobRound struct {
	Bytes            int64
	Put, Get         time.Duration // Ordo's backend
	BasePut, BaseGet time.Duration // the baseline
	Rate, BaseRate   float64       // bytes per second, in and out
	BaselineWhat     string
	BaselineFirst    bool // the baseline ran first in this round
}

func (r BlobRound) ratio() float64 { return r.Rate / r.BaseRate }

// blobData is the content of the blob scenarios: pseudo-random, so that
// nothing along the way compresses it, and held in memory once so that
// making it costs neither side anything.
func blobData(mib, round int) []byte {
	p := make([]byte, mib<<20)
	_, _ = rand.NewChaCha8([32]byte{byte(round), 'o', 'r', 'd', 'o'}).Read(p)
	return p
}

// blobSide is one side of a blob round: store the bytes, read them back,
// and (not measured) remove them.
type blobSide struct {
	put   func(ctx context.Context, p []byte, digest string) error
	get   func(ctx context.Context, p []byte, digest string) error
	clean func(ctx context.Context, digest string) error
}

// measureBlobs runs rounds of Ordo's side next to the baseline's, in
// alternating order, each on new content.
func measureBlobs(ctx context.Context, env Env, mib, rounds int, ordo, base blobSide, baseWhat string) ([]BlobRound, error) {
	var out []BlobRound
	for round := 1; round <= rounds; round++ {
		p := blobData(mib, round)
		digest, _, err := blobstore.Digest(bytesReader(p))
		if err != nil {
			return nil, err
		}
		r := BlobRound{Bytes: int64(len(p)), BaselineWhat: baseWhat, BaselineFirst: round%2 == 0}
		measure := func(name string, side blobSide, put, get *time.Duration) error {
			env.logf("round %d of %d: %s stores %d MiB", round, rounds, name, mib)
			start := time.Now()
			if err := side.put(ctx, p, digest); err != nil {
				return fmt.Errorf("%s: store: %w", name, err)
			}
			*put = time.Since(start)
			start = time.Now()
			if err := side.get(ctx, p, digest); err != nil {
				return fmt.Errorf("%s: read back: %w", name, err)
			}
			*get = time.Since(start)
			return side.clean(ctx, digest)
		}
		steps := []func() error{
			func() error { return measure("ordo", ordo, &r.Put, &r.Get) },
			func() error { return measure("baseline", base, &r.BasePut, &r.BaseGet) },
		}
		if r.BaselineFirst {
			slices.Reverse(steps)
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return nil, err
			}
		}
		r.Rate = 2 * float64(r.Bytes) / (r.Put + r.Get).Seconds()
		r.BaseRate = 2 * float64(r.Bytes) / (r.BasePut + r.BaseGet).Seconds()
		out = append(out, r)
	}
	return out, nil
}

// bytesReader reads p as a plain io.Reader, as a task's output file is
// read: no ReaderAt or WriterTo for either side to take a shortcut with.
func bytesReader(p []byte) io.Reader { return &sliceReader{p: p} }

// sliceReader is bytes.Reader without its shortcuts.
type sliceReader struct{ p []byte }

func (s *sliceReader) Read(b []byte) (int, error) {
	if len(s.p) == 0 {
		return 0, io.EOF
	}
	n := copy(b, s.p)
	s.p = s.p[n:]
	return n, nil
}

// readBack reads a blob whole through the store and verifies it.
func readBack(ctx context.Context, s blobstore.Store, digest string, size int64) error {
	rc, err := s.Get(ctx, digest, 0, -1)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, blobstore.Verify(rc, digest, size))
	return err
}

func storeSide(s blobstore.Store) blobSide {
	return blobSide{
		put: func(ctx context.Context, p []byte, digest string) error {
			return s.Put(ctx, digest, int64(len(p)), bytesReader(p))
		},
		get: func(ctx context.Context, p []byte, digest string) error {
			return readBack(ctx, s, digest, int64(len(p)))
		},
		clean: s.Delete,
	}
}

func blobsPostgresScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	pool, err := newPool(ctx, env)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE bench_bytea (seq integer PRIMARY KEY, data bytea NOT NULL)`); err != nil {
		return nil, err
	}
	rounds, err := measureBlobs(ctx, env, opts.Sizes.BlobMiB, opts.Sizes.Rounds,
		storeSide(blobstore.NewPostgres(pool)), plainCopySide(pool),
		fmt.Sprintf("a plain pgx COPY of the same bytes in rows of %d MiB into a bytea table, and a SELECT of them", blobstore.ChunkSize>>20))
	if err != nil {
		return nil, err
	}
	return blobRow(rounds, "postgres", 0.5), nil
}

// plainCopySide is the postgres baseline: the bytes in rows of one chunk,
// copied in and selected back, and nothing else.
func plainCopySide(pool *pgxpool.Pool) blobSide {
	return blobSide{
		put: func(ctx context.Context, p []byte, _ string) error {
			seq := 0
			_, err := pool.CopyFrom(ctx, pgx.Identifier{"bench_bytea"}, []string{"seq", "data"}, pgx.CopyFromFunc(func() ([]any, error) {
				from := seq * blobstore.ChunkSize
				if from >= len(p) {
					return nil, nil
				}
				seq++
				return []any{seq, p[from:min(from+blobstore.ChunkSize, len(p))]}, nil
			}))
			return err
		},
		get: func(ctx context.Context, p []byte, _ string) error {
			rows, err := pool.Query(ctx, `SELECT data FROM bench_bytea ORDER BY seq`)
			if err != nil {
				return err
			}
			n := 0
			for rows.Next() {
				n += len(rows.RawValues()[0])
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if n != len(p) {
				return fmt.Errorf("read %d bytes back, stored %d", n, len(p))
			}
			return nil
		},
		clean: func(ctx context.Context, _ string) error {
			_, err := pool.Exec(ctx, `TRUNCATE bench_bytea`)
			return err
		},
	}
}

func blobsS3Scenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	srv, err := seaweed.Start(ctx, seaweed.Options{Dir: filepath.Join(env.TempDir, "seaweedfs")})
	if errors.Is(err, seaweed.ErrMissing) {
		return nil, fmt.Errorf("%w; the scenario runs on SeaweedFS's S3 gateway", err)
	}
	if err != nil {
		return nil, err
	}
	defer srv.Stop() //nolint:errcheck // the measures are taken
	const bucket = "bench"
	if err := srv.CreateBucket(ctx, bucket); err != nil {
		return nil, err
	}
	store, err := blobstore.OpenS3(ctx, blobstore.S3Config{
		Bucket: bucket, Prefix: "ordo", Endpoint: srv.Endpoint, Region: "us-east-1",
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey,
	})
	if err != nil {
		return nil, err
	}
	client, err := srv.Client()
	if err != nil {
		return nil, err
	}
	// The bucket's first write waits for SeaweedFS to grow its volumes:
	// not a cost of either side.
	if _, err := client.PutObject(ctx, bucket, "warm", bytesReader(make([]byte, 1<<20)), 1<<20, minio.PutObjectOptions{}); err != nil {
		return nil, err
	}
	bare := blobSide{
		put: func(ctx context.Context, p []byte, _ string) error {
			_, err := client.PutObject(ctx, bucket, "bare", bytesReader(p), int64(len(p)), minio.PutObjectOptions{})
			return err
		},
		get: func(ctx context.Context, p []byte, _ string) error {
			obj, err := client.GetObject(ctx, bucket, "bare", minio.GetObjectOptions{})
			if err != nil {
				return err
			}
			defer obj.Close()
			n, err := io.Copy(io.Discard, obj)
			if err == nil && n != int64(len(p)) {
				err = fmt.Errorf("read %d bytes back, stored %d", n, len(p))
			}
			return err
		},
		clean: func(ctx context.Context, _ string) error {
			return client.RemoveObject(ctx, bucket, "bare", minio.RemoveObjectOptions{})
		},
	}
	rounds, err := measureBlobs(ctx, env, opts.Sizes.BlobMiB, opts.Sizes.Rounds, storeSide(store), bare,
		"a bare PutObject and GetObject of the same bytes with the same client (minio-go's defaults)")
	if err != nil {
		return nil, err
	}
	return blobRow(rounds, "s3 (SeaweedFS on loopback)", 0.8), nil
}

// blobRow reports the round of the median ratio, with the range of all.
func blobRow(rounds []BlobRound, backend string, target float64) []Row {
	slices.SortFunc(rounds, func(a, b BlobRound) int { return cmp.Compare(a.ratio(), b.ratio()) })
	r := rounds[len(rounds)/2]
	mib := float64(r.Bytes) / (1 << 20)
	row := Row{
		What: fmt.Sprintf("%s blob store: store and read back (verified) %.0f MiB", backend, mib),
		Ordo: fmt.Sprintf("%.0f MiB/s (store %s, read %s)", r.Rate/(1<<20), r.Put.Round(time.Millisecond), r.Get.Round(time.Millisecond)),
		Baseline: fmt.Sprintf("%s: %.0f MiB/s (store %s, read %s)", r.BaselineWhat, r.BaseRate/(1<<20),
			r.BasePut.Round(time.Millisecond), r.BaseGet.Round(time.Millisecond)),
		Ratio:  ratio(r.ratio()),
		Target: fmt.Sprintf("≥ %.1f of the baseline", target),
		Checks: []Check{atLeast("ratio", r.ratio(), target)},
		Metrics: map[string]float64{
			"bytes": float64(r.Bytes), "bytes_per_s": r.Rate, "baseline_bytes_per_s": r.BaseRate, "ratio": r.ratio(),
			"put_s": r.Put.Seconds(), "get_s": r.Get.Seconds(), "baseline_put_s": r.BasePut.Seconds(), "baseline_get_s": r.BaseGet.Seconds(),
			"rounds": float64(len(rounds)), "ratio_min": rounds[0].ratio(), "ratio_max": rounds[len(rounds)-1].ratio(),
		},
	}
	if len(rounds) > 1 {
		row.Note = fmt.Sprintf("median of %d rounds, Ordo and the baseline in alternating order; ratios %.2f to %.2f",
			len(rounds), rounds[0].ratio(), rounds[len(rounds)-1].ratio())
	}
	return []Row{row}
}
