-- A cache hit reuses the cached task's outputs and metrics by digest: the
-- cache entry names them, so a hit needs no read of the source's events
-- (which retention may have archived), and prune keeps the blobs a cache
-- entry names.
ALTER TABLE task_cache ADD COLUMN outputs jsonb, ADD COLUMN metrics jsonb;

COMMENT ON COLUMN task_cache.outputs IS 'The outputs of the cached task run (a JSON list of {name, sha256, size, media_type}), reused by digest on a hit; NULL when it had none.';
COMMENT ON COLUMN task_cache.metrics IS 'The metrics of the cached task run (a JSON object of name -> number), reused on a hit; NULL when it had none.';
