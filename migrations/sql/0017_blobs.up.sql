-- The postgres backend of the blob store (package blobstore): the files
-- tasks exchange, each stored once under the SHA-256 of its content, in
-- chunks. These tables are not the event log: a blob no event names may be
-- deleted (ordo prune does), and a blob row exists only once every chunk of
-- it is written and verified, in the same transaction.
CREATE TABLE blobs (
    digest     text        PRIMARY KEY CHECK (digest ~ '^[0-9a-f]{64}$'),
    size       bigint      NOT NULL CHECK (size >= 0),
    chunk_size integer     NOT NULL CHECK (chunk_size > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE blobs IS 'Blobs of the blob store''s postgres backend: one row per stored file content, committed with all of its chunks once they match the digest. Events name blobs by digest; ordo prune deletes the blobs nothing names.';
COMMENT ON COLUMN blobs.digest IS 'SHA-256 of the content, lower-case hex: the blob''s only name.';
COMMENT ON COLUMN blobs.size IS 'Size of the content in bytes.';
COMMENT ON COLUMN blobs.chunk_size IS 'Size in bytes of every chunk but the last, which holds the rest.';
COMMENT ON COLUMN blobs.created_at IS 'When the blob was last stored: first written, or stored again by a Put that found it, which refreshes this time so that a prune cannot take it before the event that names it. Prune''s grace period counts from it.';

CREATE INDEX blobs_created_at_idx ON blobs (created_at, digest);
COMMENT ON INDEX blobs_created_at_idx IS 'Blobs by age, for listing those stored before a time (ordo prune).';

CREATE TABLE blob_chunks (
    digest text    NOT NULL REFERENCES blobs (digest) ON DELETE CASCADE,
    seq    integer NOT NULL CHECK (seq >= 0),
    data   bytea   NOT NULL,
    PRIMARY KEY (digest, seq)
);
-- Stored out of line without compression: most outputs (models, parquet,
-- images) do not compress, trying costs CPU on every write, and an
-- uncompressed value can be read in slices.
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

COMMENT ON TABLE blob_chunks IS 'The content of each blob of the table blobs, in order, in chunks of blobs.chunk_size bytes; deleted with their blob.';
COMMENT ON COLUMN blob_chunks.digest IS 'The blob the chunk belongs to.';
COMMENT ON COLUMN blob_chunks.seq IS 'Position of the chunk in the blob, from 0: it holds the bytes from seq * chunk_size.';
COMMENT ON COLUMN blob_chunks.data IS 'The chunk''s bytes.';
