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
	outputs   []domain.Output
	metrics   map[string]float64
	expiresAt *time.Time
}

func newCacheEntry(key string, taskRunID uuid.UUID, done domain.TaskRunCompleted, policy *domain.CachePolicy, now time.Time) cacheEntry {
	e := cacheEntry{key: key, taskRunID: taskRunID, result: done.Result, outputs: done.Outputs, metrics: done.Metrics}
	if policy.ExpirationSeconds > 0 {
		at := now.Add(time.Duration(policy.ExpirationSeconds * float64(time.Second)))
		e.expiresAt = &at
	}
	return e
}

// cacheHit is a stored result found for a key, with the outputs (by
// digest: nothing is copied) and metrics of the task run that made it.
type cacheHit struct {
	taskRunID uuid.UUID
	result    json.RawMessage
	outputs   []domain.Output
	metrics   map[string]float64
}

// lookupCache returns the unexpired result stored under key, if any.
func lookupCache(ctx context.Context, tx pgx.Tx, key string) (cacheHit, bool, error) {
	var h cacheHit
	var result []byte
	err := tx.QueryRow(ctx, `
SELECT task_run_id, result, outputs, metrics FROM task_cache
WHERE cache_key = $1 AND (expires_at IS NULL OR expires_at > now())`, key).Scan(&h.taskRunID, &result, &h.outputs, &h.metrics)
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
		outputs []*string
		metrics []*string
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
		o, err := jsonOrNull(len(e.outputs) > 0, e.outputs)
		if err != nil {
			return err
		}
		m, err := jsonOrNull(len(e.metrics) > 0, e.metrics)
		if err != nil {
			return err
		}
		outputs, metrics = append(outputs, o), append(metrics, m)
		expires = append(expires, e.expiresAt)
	}
	_, err := tx.Exec(ctx, `
INSERT INTO task_cache (cache_key, task_run_id, result, outputs, metrics, created_at, expires_at)
SELECT k, id, r::jsonb, o::jsonb, m::jsonb, now(), x
FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]) AS u(k, id, r, o, m, x)
ORDER BY k
ON CONFLICT (cache_key) DO UPDATE
SET task_run_id = EXCLUDED.task_run_id, result = EXCLUDED.result, outputs = EXCLUDED.outputs, metrics = EXCLUDED.metrics,
    created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at`,
		keys, ids, results, outputs, metrics, expires)
	if err != nil {
		return fmt.Errorf("store cached results: %w", err)
	}
	return nil
}

// jsonOrNull is v as JSON text, or NULL when it is not present.
func jsonOrNull(present bool, v any) (*string, error) {
	if !present {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode cache entry: %w", err)
	}
	s := string(b)
	return &s, nil
}
