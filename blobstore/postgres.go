package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ChunkSize is the size of the chunks the postgres backend stores a blob
// in: large enough that a row's overhead is lost in it, small enough that a
// Put or a Get holds only a few of them in memory.
const ChunkSize = 1 << 20

// chunksPerQuery is how many chunks a Get reads per query.
const chunksPerQuery = 4

// Postgres is the default store: blobs in the tables blobs and blob_chunks
// of Ordo's own database (migration 0017), so that one machine needs
// nothing more than the database it already has. A Put writes a blob's
// chunks with COPY and its row in one transaction, committed only once the
// content matches the digest.
type Postgres struct {
	pool      *pgxpool.Pool
	chunkSize int
}

// NewPostgres returns a store on pool's database, migrated to version 17
// or later. Close does not close the pool.
func NewPostgres(pool *pgxpool.Pool) *Postgres {
	return &Postgres{pool: pool, chunkSize: ChunkSize}
}

func (s *Postgres) Put(ctx context.Context, digest string, size int64, r io.Reader) error {
	if err := checkDigest(digest); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("put blob %s: negative size %d", digest, size)
	}
	// A blob already stored is stored again by refreshing its time, so that
	// a prune (DeleteIfBefore) cannot take it before the event that will
	// name it; the row lock orders the two.
	tag, err := s.pool.Exec(ctx, `UPDATE blobs SET created_at = now() WHERE digest = $1`, digest)
	if err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	hr := newHashingReader(io.LimitReader(r, size+1))
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// A concurrent Put of the same digest waits here for the other's
		// commit, then finds the blob stored (a unique violation).
		if _, err := tx.Exec(ctx, `INSERT INTO blobs (digest, size, chunk_size) VALUES ($1, $2, $3)`, digest, size, s.chunkSize); err != nil {
			return err
		}
		src := &chunkSource{ctx: ctx, r: hr, digest: digest, buf: make([]byte, s.chunkSize)}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"blob_chunks"}, []string{"digest", "seq", "data"}, src); err != nil {
			return err
		}
		return hr.check(digest, size)
	})
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "blobs_pkey":
		return nil
	case errors.Is(err, ErrDigestMismatch):
		return err
	case ctx.Err() != nil && !errors.Is(err, ctx.Err()):
		// pgx closes the connection of a cancelled COPY: say why.
		return fmt.Errorf("put blob %s: %w (%v)", digest, ctx.Err(), err)
	}
	return fmt.Errorf("put blob %s: %w", digest, err)
}

// chunkSource is the rows of a COPY into blob_chunks: one chunk read at a
// time into one buffer, which pgx copies out before asking for the next.
type chunkSource struct {
	ctx    context.Context
	r      io.Reader
	digest string
	buf    []byte
	n      int
	seq    int32
	done   bool
	err    error
}

func (c *chunkSource) Next() bool {
	if c.done {
		return false
	}
	if err := c.ctx.Err(); err != nil {
		c.err = err
		return false
	}
	n, err := io.ReadFull(c.r, c.buf)
	switch {
	case err == io.EOF:
		return false
	case err == io.ErrUnexpectedEOF:
		c.done = true
	case err != nil:
		c.err = err
		return false
	}
	if c.n > 0 {
		c.seq++
	}
	c.n = n
	return true
}

func (c *chunkSource) Values() ([]any, error) {
	return []any{c.digest, c.seq, c.buf[:c.n]}, nil
}

func (c *chunkSource) Err() error { return c.err }

func (s *Postgres) Get(ctx context.Context, digest string, off, n int64) (io.ReadCloser, error) {
	if err := checkDigest(digest); err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fmt.Errorf("get blob %s: negative offset %d", digest, off)
	}
	b, chunkSize, err := s.stat(ctx, digest)
	if err != nil {
		return nil, err
	}
	end := b.Size
	if n >= 0 && off+n < end {
		end = off + n
	}
	if off >= end {
		return io.NopCloser(&io.LimitedReader{}), nil
	}
	return &pgReader{ctx: ctx, pool: s.pool, digest: digest, chunkSize: int64(chunkSize), off: off, end: end}, nil
}

// pgReader streams the bytes [off, end) of a blob, reading chunksPerQuery
// chunks per query into buffers it reuses.
type pgReader struct {
	ctx       context.Context
	pool      *pgxpool.Pool
	digest    string
	chunkSize int64
	off, end  int64    // the next byte to hand out, and the end of the range
	bufs      [][]byte // the chunks of the last query, in order
	next      int      // the chunk of bufs that holds off
	at        int      // where off is in bufs[next]
}

func (r *pgReader) Read(p []byte) (int, error) {
	if r.off >= r.end {
		return 0, io.EOF
	}
	if r.next == len(r.bufs) {
		if err := r.fetch(); err != nil {
			return 0, err
		}
	}
	c := r.bufs[r.next][r.at:]
	if rest := r.end - r.off; int64(len(c)) > rest {
		c = c[:rest]
	}
	n := copy(p, c)
	r.off += int64(n)
	if r.at += n; r.at == len(r.bufs[r.next]) {
		r.next, r.at = r.next+1, 0
	}
	return n, nil
}

// fetch reads the chunks from the one that holds off.
func (r *pgReader) fetch() error {
	first := r.off / r.chunkSize
	last := min((r.end-1)/r.chunkSize, first+chunksPerQuery-1)
	rows, err := r.pool.Query(r.ctx, `SELECT seq, data FROM blob_chunks WHERE digest = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq`,
		r.digest, first, last)
	if err != nil {
		return fmt.Errorf("get blob %s: %w", r.digest, err)
	}
	defer rows.Close()
	spare := r.bufs[:cap(r.bufs)]
	r.bufs, r.next, r.at = r.bufs[:0], 0, int(r.off-first*r.chunkSize)
	want := first
	for rows.Next() {
		var (
			seq  int64
			data []byte
		)
		if rows.FieldDescriptions()[1].Format == pgx.BinaryFormatCode {
			if err := rows.Scan(&seq, nil); err != nil {
				return fmt.Errorf("get blob %s: %w", r.digest, err)
			}
			data = rows.RawValues()[1]
		} else if err := rows.Scan(&seq, &data); err != nil {
			return fmt.Errorf("get blob %s: %w", r.digest, err)
		}
		if seq != want {
			break
		}
		var buf []byte
		if i := len(r.bufs); i < len(spare) {
			buf = spare[i][:0]
		}
		r.bufs = append(r.bufs, append(buf, data...))
		want++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("get blob %s: %w", r.digest, err)
	}
	if want <= last {
		return fmt.Errorf("get blob %s: chunk %d is missing (the blob was deleted while it was read): %w", r.digest, want, ErrNotFound)
	}
	return nil
}

func (r *pgReader) Close() error {
	r.bufs, r.off = nil, r.end
	return nil
}

func (s *Postgres) Stat(ctx context.Context, digest string) (Blob, error) {
	if err := checkDigest(digest); err != nil {
		return Blob{}, err
	}
	b, _, err := s.stat(ctx, digest)
	return b, err
}

func (s *Postgres) stat(ctx context.Context, digest string) (Blob, int32, error) {
	b := Blob{Digest: digest}
	var chunkSize int32
	err := s.pool.QueryRow(ctx, `SELECT size, chunk_size, created_at FROM blobs WHERE digest = $1`, digest).Scan(&b.Size, &chunkSize, &b.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Blob{}, 0, fmt.Errorf("blob %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return Blob{}, 0, fmt.Errorf("stat blob %s: %w", digest, err)
	}
	return b, chunkSize, nil
}

func (s *Postgres) Delete(ctx context.Context, digest string) error {
	if err := checkDigest(digest); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM blobs WHERE digest = $1`, digest); err != nil {
		return fmt.Errorf("delete blob %s: %w", digest, err)
	}
	return nil
}

// DeleteIfBefore deletes a blob unless it was stored, or stored again,
// at or after before, and reports whether it deleted it. A Put that
// refreshes the blob meanwhile wins: the delete waits for its row lock and
// then sees the new time.
func (s *Postgres) DeleteIfBefore(ctx context.Context, digest string, before time.Time) (bool, error) {
	if err := checkDigest(digest); err != nil {
		return false, err
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM blobs WHERE digest = $1 AND created_at < $2`, digest, before)
	if err != nil {
		return false, fmt.Errorf("delete blob %s: %w", digest, err)
	}
	return tag.RowsAffected() == 1, nil
}

// listPage is how many blobs List reads per query; fn runs between
// queries, so it may use the pool itself (prune deletes as it lists).
const listPage = 1000

func (s *Postgres) List(ctx context.Context, before time.Time, fn func(Blob) error) error {
	var (
		after     time.Time
		afterDgst string
	)
	for {
		rows, err := s.pool.Query(ctx, `SELECT digest, size, created_at FROM blobs
			WHERE created_at < $1 AND (created_at, digest) > ($2, $3)
			ORDER BY created_at, digest LIMIT $4`, before, after, afterDgst, listPage)
		if err != nil {
			return fmt.Errorf("list blobs: %w", err)
		}
		page, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Blob, error) {
			var b Blob
			err := row.Scan(&b.Digest, &b.Size, &b.CreatedAt)
			return b, err
		})
		if err != nil {
			return fmt.Errorf("list blobs: %w", err)
		}
		for _, b := range page {
			if err := fn(b); err != nil {
				return err
			}
		}
		if len(page) < listPage {
			return nil
		}
		after, afterDgst = page[len(page)-1].CreatedAt, page[len(page)-1].Digest
	}
}

func (s *Postgres) Close() error { return nil }
