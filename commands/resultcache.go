package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
)

// cacheEntry is a result to store in task_cache.
type cacheEntry struct {
	key       string
	taskRunID uuid.UUID
	result    json.RawMessage
	expiresAt *time.Time
}

func newCacheEntry(key string, taskRunID uuid.UUID, result json.RawMessage, policy *domain.CachePolicy, now time.Time) cacheEntry {
	e := cacheEntry{key: key, taskRunID: taskRunID, result: result}
	if policy.ExpirationSeconds > 0 {
		at := now.Add(time.Duration(policy.ExpirationSeconds * float64(time.Second)))
		e.expiresAt = &at
	}
	return e
}

// cacheHit is a stored result found for a key.
type cacheHit struct {
	taskRunID uuid.UUID
	result    json.RawMessage
}

// lookupCache returns the unexpired result stored under key, if any.
func lookupCache(ctx context.Context, tx pgx.Tx, key string) (cacheHit, bool, error) {
	var h cacheHit
	var result []byte
	err := tx.QueryRow(ctx, `
SELECT task_run_id, result FROM task_cache
WHERE cache_key = $1 AND (expires_at IS NULL OR expires_at > now())`, key).Scan(&h.taskRunID, &result)
	if errors.Is(err, pgx.ErrNoRows) {
		return cacheHit{}, false, nil
	}
	if err != nil {
		return cacheHit{}, false, fmt.Errorf("look up cached result: %w", err)
	}
	if len(result) > 0 {
		h.result = result
	}
	return h, true, nil
}

// storeCacheEntries stores results under their keys, replacing older ones.
// When one key completes twice in a batch, the last one wins.
func storeCacheEntries(ctx context.Context, tx pgx.Tx, entries []cacheEntry) error {
	last := map[string]int{}
	for i, e := range entries {
		last[e.key] = i
	}
	var (
		keys    []string
		ids     []uuid.UUID
		results []*string
		expires []*time.Time
	)
	for i, e := range entries {
		if last[e.key] != i {
			continue
		}
		keys = append(keys, e.key)
		ids = append(ids, e.taskRunID)
		var r *string
		if len(e.result) > 0 {
			s := string(e.result)
			r = &s
		}
		results = append(results, r)
		expires = append(expires, e.expiresAt)
	}
	_, err := tx.Exec(ctx, `
INSERT INTO task_cache (cache_key, task_run_id, result, created_at, expires_at)
SELECT k, id, r::jsonb, now(), x FROM unnest($1::text[], $2::uuid[], $3::text[], $4::timestamptz[]) AS u(k, id, r, x)
ORDER BY k
ON CONFLICT (cache_key) DO UPDATE
SET task_run_id = EXCLUDED.task_run_id, result = EXCLUDED.result, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at`,
		keys, ids, results, expires)
	if err != nil {
		return fmt.Errorf("store cached results: %w", err)
	}
	return nil
}
