// Package retention keeps Ordo's database from growing without end: it
// deletes the task logs of runs that finished long ago and River's
// finished job rows, and archives the events of old finished runs to
// NDJSON files before removing them from the log, recording each archival
// as an EventsArchived event. The runs leave the read models in the same
// transaction that removes their events, so that the read models stay
// equal to a replay of the log. Then it deletes the blobs that no event
// left in the log and no cached result names, once a grace period has
// passed since they were stored, listing them in a file recorded as a
// BlobsDeleted event.
//
// It depends on domain, eventstore and blobstore; it must never import
// api, jobs or projections.
package retention

import (
	"cmp"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/riverjob"
)

// replayLockKey is projections' replay lock ("ordorply"): a prune that
// archives holds it, so that a replay never rebuilds from a log that a
// prune changes under it, nor two prunes archive at once.
const replayLockKey int64 = 0x6f72646f72706c79

// terminalStates are the flow run and task run state types after which
// nothing happens unless a user retries.
var terminalStates = []string{string(domain.Completed), string(domain.Failed), string(domain.Cancelled), string(domain.Crashed)}

// Options say what to prune.
type Options struct {
	// Before: what finished (or, for River jobs, was finalized) before
	// this time is pruned. Required.
	Before time.Time
	// ArchiveDir is where event archives are written. Empty: events are
	// kept, and only logs and River jobs are pruned.
	ArchiveDir string
	// DryRun counts what would be pruned and changes nothing.
	DryRun bool
	// BatchRuns bounds the flow runs archived in one file and one
	// transaction. Defaults to 500.
	BatchRuns int
	// LockTimeout bounds the wait for the events table lock in each
	// archive transaction (appends wait meanwhile). Defaults to 3s.
	LockTimeout time.Duration
	// Blobs is the blob store whose blobs nothing names any more are
	// deleted, after the events, when ArchiveDir is set: the list of what
	// was deleted goes there. Nil: blobs are kept.
	Blobs blobstore.Store
	// BlobGrace protects uploads in flight: only blobs stored, or stored
	// again, longer ago than this are deleted. Defaults to 1h.
	BlobGrace time.Duration
	// BatchBlobs bounds the blobs deleted per list file and record.
	// Defaults to 10,000.
	BatchBlobs int
	// Actor is recorded on the retention events. Defaults to "prune".
	Actor string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (o *Options) validate() error {
	switch {
	case o.Before.IsZero():
		return domain.Invalid("before", "required: prune what finished before this time")
	case o.BatchRuns < 0:
		return domain.Invalid("batch_runs", "must not be negative, got %d", o.BatchRuns)
	case o.LockTimeout < 0:
		return domain.Invalid("lock_timeout", "must not be negative, got %s", o.LockTimeout)
	case o.BlobGrace < 0:
		return domain.Invalid("blob_grace", "must not be negative, got %s", o.BlobGrace)
	case o.BatchBlobs < 0:
		return domain.Invalid("batch_blobs", "must not be negative, got %d", o.BatchBlobs)
	}
	if o.BlobGrace == 0 {
		o.BlobGrace = time.Hour
	}
	if o.BatchBlobs == 0 {
		o.BatchBlobs = 10000
	}
	if o.BatchRuns == 0 {
		o.BatchRuns = 500
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = 3 * time.Second
	}
	if o.Actor == "" {
		o.Actor = "prune"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Result says what a prune removed, or with DryRun would remove.
type Result struct {
	LogLines        int64     // task log lines of finished runs
	RiverJobs       int64     // completed, cancelled and discarded River jobs
	IdempotencyKeys int64     // stored first responses of the HTTP API
	Runs            int       // flow runs archived and removed (sub-flows included)
	Events          int       // events archived and removed
	Files           []string  // archive files written
	Blobs           int       // blobs deleted from the blob store
	BlobBytes       int64     // their total size
	BlobsKept       int       // blobs older than the grace period that the log or the result cache names
	BlobFiles       []string  // lists of the blobs deleted
	BlobsBefore     time.Time // the grace period's start; zero when blobs were not pruned
	Skipped         int       // finished runs left for a later prune (see Skips)
	Skips           []string  // why, for the first few
}

const maxSkips = 20

func (r *Result) skip(n int, format string, args ...any) {
	r.Skipped += n
	if len(r.Skips) < maxSkips {
		r.Skips = append(r.Skips, fmt.Sprintf(format, args...))
	}
}

// Prune removes what finished before opts.Before: the log lines of
// finished runs, River's finalized jobs, the HTTP API's stored idempotent
// responses and, with an ArchiveDir, the events of finished flow runs
// (whole trees of sub-flow runs at once), each batch archived to a file
// first.
func Prune(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store, opts Options) (Result, error) {
	var res Result
	if err := opts.validate(); err != nil {
		return res, err
	}
	var err error
	if res.LogLines, err = deleteInBatches(ctx, pool, opts.DryRun, `
SELECT l.id FROM task_run_logs l JOIN flow_runs f ON f.id = l.flow_run_id
WHERE f.ended_at < $1 AND f.state_type = ANY($2)`, "task_run_logs", "id", opts.Before, terminalStates); err != nil {
		return res, fmt.Errorf("prune logs: %w", err)
	}
	if res.RiverJobs, err = deleteInBatches(ctx, pool, opts.DryRun, riverjob.FinalizedBeforeSQL,
		riverjob.Table, "id", opts.Before); err != nil {
		return res, fmt.Errorf("prune river jobs: %w", err)
	}
	// a key is per actor: it goes once no actor's use of it is recent
	if res.IdempotencyKeys, err = deleteInBatches(ctx, pool, opts.DryRun, `
SELECT key FROM idempotency_keys k WHERE created_at < $1 AND completed_at IS NOT NULL
AND NOT EXISTS (SELECT 1 FROM idempotency_keys n WHERE n.key = k.key AND (n.created_at >= $1 OR n.completed_at IS NULL))`,
		"idempotency_keys", "key", opts.Before); err != nil {
		return res, fmt.Errorf("prune idempotency keys: %w", err)
	}
	if opts.ArchiveDir == "" {
		return res, nil
	}
	if !opts.DryRun {
		if err := os.MkdirAll(opts.ArchiveDir, 0o750); err != nil {
			return res, fmt.Errorf("archive directory: %w", err)
		}
	}
	lock, err := pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("prune: %w", err)
	}
	defer lock.Release()
	var locked bool
	if err := lock.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, replayLockKey).Scan(&locked); err != nil {
		return res, fmt.Errorf("prune: take the replay lock: %w", err)
	}
	if !locked {
		return res, domain.Errorf(domain.CodeConflict, "a replay or another prune is running on this database: try again when it is done")
	}
	defer func() { _, _ = lock.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, replayLockKey) }()

	stamp := time.Now().UTC().Format("20060102T150405Z")
	a := &archiver{pool: pool, store: store, opts: opts, res: &res, stamp: stamp}
	if err := a.run(ctx); err != nil {
		return res, err
	}
	if opts.Blobs == nil {
		return res, nil
	}
	b := &blobPruner{pool: pool, store: store, opts: opts, res: &res, stamp: stamp}
	return res, b.run(ctx, a.dryRemoved)
}

// deleteInBatches deletes (or counts) the rows whose key the query selects,
// 10,000 at a time, each batch in its own short transaction.
func deleteInBatches(ctx context.Context, pool *pgxpool.Pool, dryRun bool, query, table, key string, args ...any) (int64, error) {
	if dryRun {
		var n int64
		err := pool.QueryRow(ctx, `SELECT count(*) FROM (`+query+`) AS q`, args...).Scan(&n)
		return n, err
	}
	id := pgx.Identifier{key}.Sanitize()
	var total int64
	for {
		tag, err := pool.Exec(ctx, `DELETE FROM `+pgx.Identifier{table}.Sanitize()+` WHERE `+id+` IN (`+query+` LIMIT 10000)`, args...)
		if err != nil {
			return total, err
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 10000 {
			return total, nil
		}
	}
}

// archiver archives and removes the events of finished runs, batch by
// batch.
type archiver struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
	opts  Options
	res   *Result
	stamp string
	files int
	// dryRemoved: with DryRun, the streams whose events a prune would
	// remove, so that the blobs only they name count as deleted too
	dryRemoved []uuid.UUID
}

// tree is a flow run that is no sub-flow, with its sub-flow runs.
type tree struct {
	root    uuid.UUID
	ended   time.Time
	members []uuid.UUID
}

// run archives batch after batch; the caller holds the replay lock.
func (a *archiver) run(ctx context.Context) error {
	after := key{}
	for {
		trees, next, err := a.candidates(ctx, after)
		if err != nil {
			return err
		}
		if next == after {
			return nil // no finished run left after the last one seen
		}
		after = next
		if len(trees) == 0 {
			continue
		}
		if err := a.batch(ctx, trees); err != nil {
			return err
		}
	}
}

// key orders root flow runs for keyset paging: by end time, then id.
type key struct {
	ended time.Time
	id    uuid.UUID
}

// candidates returns the next trees after a root, in order of end time,
// whose runs all finished before the cutoff, at most BatchRuns runs in all
// (or one larger tree), and the key of the last root it dealt with.
func (a *archiver) candidates(ctx context.Context, after key) ([]tree, key, error) {
	rows, err := a.pool.Query(ctx, `
WITH RECURSIVE roots AS (
    SELECT id, ended_at FROM flow_runs
    WHERE parent_flow_run_id IS NULL AND ended_at < $1 AND state_type = ANY($2)
      AND (ended_at, id) > ($3, $4)
    ORDER BY ended_at, id
    LIMIT $5
), tree(root, id) AS (
    SELECT id, id FROM roots
    UNION ALL
    SELECT t.root, f.id FROM flow_runs f JOIN tree t ON f.parent_flow_run_id = t.id
)
SELECT r.id, r.ended_at, array_agg(t.id ORDER BY t.id),
       bool_and(f.ended_at < $1 AND f.state_type = ANY($2))
FROM roots r JOIN tree t ON t.root = r.id JOIN flow_runs f ON f.id = t.id
GROUP BY r.id, r.ended_at
ORDER BY r.ended_at, r.id`, a.opts.Before, terminalStates, after.ended, after.id, a.opts.BatchRuns)
	if err != nil {
		return nil, after, fmt.Errorf("find finished runs: %w", err)
	}
	defer rows.Close()
	var out []tree
	runs := 0
	for rows.Next() {
		var t tree
		var finished bool
		if err := rows.Scan(&t.root, &t.ended, &t.members, &finished); err != nil {
			return nil, after, fmt.Errorf("find finished runs: %w", err)
		}
		if finished && runs > 0 && runs+len(t.members) > a.opts.BatchRuns {
			break // the next call starts with this tree
		}
		after = key{t.ended, t.root}
		if !finished {
			a.res.skip(len(t.members), "flow run %s: a sub-flow run has not finished before the cutoff", t.root)
			continue
		}
		runs += len(t.members)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, after, fmt.Errorf("find finished runs: %w", err)
	}
	return out, after, nil
}

// streamState is what was read of one stream before archiving it.
type streamState struct {
	typ     string
	version int64
	count   int
}

// batch archives and removes the events of some trees: it reads their
// events, checks that every run and task run in them is finished, writes
// the file, and then, holding the events table against appends, checks
// that nothing was appended meanwhile and that the read models hold every
// event, deletes the events and the runs' rows, and records the archival.
func (a *archiver) batch(ctx context.Context, trees []tree) error {
	var flowIDs []uuid.UUID
	for _, t := range trees {
		flowIDs = append(flowIDs, t.members...)
	}
	flowEvents, err := a.readStreams(ctx, flowIDs)
	if err != nil {
		return err
	}
	runs := map[uuid.UUID]domain.FlowRun{}
	var taskIDs []uuid.UUID
	for _, env := range flowEvents {
		r := runs[env.StreamID]
		runs[env.StreamID] = r.Apply(env.Event, env.RecordedAt)
		if c, ok := env.Event.(domain.FlowRunCreated); ok {
			for _, id := range c.TaskRunIDs {
				taskIDs = append(taskIDs, id)
			}
		}
	}
	taskEvents, err := a.readStreams(ctx, taskIDs)
	if err != nil {
		return err
	}
	tasks := map[uuid.UUID]domain.TaskRun{}
	for _, env := range taskEvents {
		tasks[env.StreamID] = tasks[env.StreamID].Apply(env.Event, env.RecordedAt)
	}

	// Whole trees only, every run and task run of them finished in the log.
	var keep []tree
	for _, t := range trees {
		ok := true
		for _, id := range t.members {
			r, seen := runs[id]
			if !seen || !r.State.Type.Terminal() {
				a.res.skip(len(t.members), "flow run %s: its run %s is not finished in the log", t.root, id)
				ok = false
				break
			}
			for name, tid := range r.TaskRunIDs {
				if tr, seen := tasks[tid]; seen && !tr.State.Type.Terminal() {
					a.res.skip(len(t.members), "flow run %s: task %s is %s in the log", id, name, tr.State.Type)
					ok = false
					break
				}
			}
			if !ok {
				break
			}
		}
		if ok {
			keep = append(keep, t)
		}
	}
	if len(keep) == 0 {
		return nil
	}
	if len(keep) < len(trees) {
		return a.batch(ctx, keep) // read again for the trees kept only
	}

	all := slices.Concat(flowEvents, taskEvents)
	slices.SortFunc(all, func(x, y domain.Envelope) int {
		return cmp.Or(cmp.Compare(x.TransactionID, y.TransactionID), cmp.Compare(x.Position, y.Position))
	})
	streams := map[uuid.UUID]*streamState{}
	for _, env := range all {
		s := streams[env.StreamID]
		if s == nil {
			s = &streamState{typ: env.StreamType}
			streams[env.StreamID] = s
		}
		s.count++
		s.version = max(s.version, env.Version)
	}
	if a.opts.DryRun {
		a.res.Runs += len(flowIDs)
		a.res.Events += len(all)
		for id := range streams {
			a.dryRemoved = append(a.dryRemoved, id)
		}
		return nil
	}

	a.files++
	path := filepath.Join(a.opts.ArchiveDir, fmt.Sprintf("ordo-events-%s-%04d.ndjson.gz", a.stamp, a.files))
	sum, err := writeArchive(path, all)
	if err != nil {
		return err
	}
	streamIDs := make([]uuid.UUID, 0, len(streams))
	for id := range streams {
		streamIDs = append(streamIDs, id)
	}
	skipped, err := a.remove(ctx, flowIDs, streamIDs, streams, len(all), path, sum)
	if err != nil {
		return fmt.Errorf("%w (the archive %s was written and is kept; its events may still be in the log)", err, path)
	}
	if skipped != "" {
		// nothing was removed: the file would only repeat the log
		a.res.skip(len(flowIDs), "%s", skipped)
		a.files--
		if err := os.Remove(path); err != nil {
			a.opts.Logger.Warn("prune: remove the archive of a batch left in the log", "file", path, "err", err)
		}
		return nil
	}
	a.res.Runs += len(flowIDs)
	a.res.Events += len(all)
	a.res.Files = append(a.res.Files, path)
	a.opts.Logger.Info("prune: archived and removed", "runs", len(flowIDs), "events", len(all), "file", path)
	return nil
}

// readStreams reads and decodes every event of the streams.
func (a *archiver) readStreams(ctx context.Context, ids []uuid.UUID) ([]domain.Envelope, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	envs, err := a.store.ReadStreams(ctx, a.pool, ids)
	if err != nil {
		return nil, fmt.Errorf("read the events to archive: %w", err)
	}
	for i := range envs {
		if envs[i].Event == nil {
			if err := a.store.Registry().DecodeEnvelope(&envs[i]); err != nil {
				return nil, fmt.Errorf("read the events to archive: %w", err)
			}
		}
	}
	return envs, nil
}

// ArchivedEvent is one line of an archive file: an event with every
// column of its row in the events table.
type ArchivedEvent struct {
	Position      int64           `json:"position"`
	TransactionID string          `json:"transaction_id"`
	StreamID      uuid.UUID       `json:"stream_id"`
	StreamType    string          `json:"stream_type"`
	Version       int64           `json:"version"`
	Type          string          `json:"type"`
	Data          json.RawMessage `json:"data"`
	Metadata      domain.Metadata `json:"metadata"`
	RecordedAt    time.Time       `json:"recorded_at"`
}

// writeArchive writes the events as gzipped NDJSON, one event per line,
// durably (writeDurably). It returns the file's SHA-256.
func writeArchive(path string, envs []domain.Envelope) (string, error) {
	return writeDurably(path, func(w io.Writer) error {
		zw := gzip.NewWriter(w)
		enc := json.NewEncoder(zw)
		for _, env := range envs {
			line := ArchivedEvent{
				Position: env.Position, TransactionID: fmt.Sprint(env.TransactionID), StreamID: env.StreamID, StreamType: env.StreamType,
				Version: env.Version, Type: env.Type, Data: env.Data, Metadata: env.Metadata, RecordedAt: env.RecordedAt,
			}
			if err := enc.Encode(line); err != nil {
				return err
			}
		}
		return zw.Close()
	})
}

// writeDurably writes a file under a temporary name, syncs it and its
// directory, and renames it into place once complete. It returns the
// file's SHA-256.
func writeDurably(path string, write func(io.Writer) error) (string, error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", fmt.Errorf("write archive: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	if err := write(io.MultiWriter(f, h)); err != nil {
		return "", fmt.Errorf("write archive %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("write archive %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write archive %s: %w", tmp, err)
	}
	ok = true
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write archive: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return hexSum(h), nil
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// ReadArchive reads an archive file back, for tests and for people.
func ReadArchive(path string) ([]ArchivedEvent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("read archive %s: %w", path, err)
	}
	dec := json.NewDecoder(zr)
	var out []ArchivedEvent
	for {
		var e ArchivedEvent
		err := dec.Decode(&e)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read archive %s: %w", path, err)
		}
		out = append(out, e)
	}
}

// Tables, other than the log and the read models, that hold rows of flow
// runs by flow_run_id: write-side bookkeeping and logs, gone with the run.
var runTables = []string{"task_run_logs", "task_run_fanin", "flow_run_progress", "flow_run_idempotency_keys", "scheduled_runs", "deployment_run_slots"}

// remove deletes the archived events and the runs' rows in one
// transaction that holds the events table against appends, after checking
// that the streams hold exactly what was archived and that the read models
// hold all of it. It returns why it left the batch alone, if it did.
func (a *archiver) remove(ctx context.Context, flowIDs, streamIDs []uuid.UUID, streams map[uuid.UUID]*streamState, count int, path, sum string) (string, error) {
	var skipped string
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, a.opts.LockTimeout.Milliseconds())); err != nil {
			return err
		}
		// Appends wait until commit; then they find their streams gone
		// (their expected version no longer exists) and fail as conflicts.
		if err := a.store.LockAppends(ctx, tx); err != nil {
			return err
		}
		now, err := a.store.StreamSizes(ctx, tx, streamIDs)
		if err != nil {
			return err
		}
		for id, s := range streams {
			if now[id] != (eventstore.StreamSize{Version: s.version, Count: int64(s.count)}) {
				skipped = fmt.Sprintf("stream %s changed while it was archived", id)
				return nil
			}
		}
		var behind int
		if err := tx.QueryRow(ctx, `
SELECT count(*) FROM unnest($1::uuid[], $2::bigint[]) AS s(id, version)
WHERE NOT EXISTS (SELECT 1 FROM flow_runs f WHERE f.id = s.id AND f.stream_version = s.version)
  AND NOT EXISTS (SELECT 1 FROM task_runs t WHERE t.id = s.id AND t.stream_version = s.version)`,
			streamIDs, versionsOf(streamIDs, streams)).Scan(&behind); err != nil {
			return err
		}
		if behind > 0 {
			skipped = fmt.Sprintf("the read models do not hold every event of %d of the batch's streams yet (the projector is behind)", behind)
			return nil
		}

		deleted, err := a.store.DeleteStreams(ctx, tx, streamIDs)
		if err != nil {
			return fmt.Errorf("delete archived events: %w", err)
		}
		if int(deleted) != count {
			return fmt.Errorf("deleted %d events, archived %d", deleted, count)
		}
		for _, stmt := range []string{
			`DELETE FROM state_history WHERE flow_run_id = ANY($1)`,
			`DELETE FROM task_run_attempts WHERE flow_run_id = ANY($1)`,
			`DELETE FROM task_runs WHERE flow_run_id = ANY($1)`,
			`DELETE FROM flow_runs WHERE id = ANY($1)`,
		} {
			if _, err := tx.Exec(ctx, stmt, flowIDs); err != nil {
				return fmt.Errorf("remove archived runs from the read models: %w", err)
			}
		}
		for _, table := range runTables {
			if _, err := tx.Exec(ctx, `DELETE FROM `+pgx.Identifier{table}.Sanitize()+` WHERE flow_run_id = ANY($1)`, flowIDs); err != nil {
				return fmt.Errorf("remove archived runs from %s: %w", table, err)
			}
		}

		version, err := a.store.StreamVersion(ctx, tx, domain.RetentionStreamID)
		if err != nil {
			return err
		}
		sorted := slices.Clone(flowIDs)
		slices.SortFunc(sorted, func(x, y uuid.UUID) int { return slices.Compare(x[:], y[:]) })
		_, err = a.store.Append(ctx, tx, eventstore.Append{
			StreamID: domain.RetentionStreamID, ExpectedVersion: version,
			Events:   []domain.Event{domain.EventsArchived{FlowRunIDs: sorted, File: path, Count: count, SHA256: sum, Before: a.opts.Before.UTC()}},
			Metadata: domain.Metadata{Actor: a.opts.Actor, Reason: fmt.Sprintf("archived %d events of %d flow runs that ended before %s", count, len(flowIDs), a.opts.Before.UTC().Format(time.RFC3339))},
		})
		return err
	})
	if err == nil && skipped == "" {
		a.store.Committed()
	}
	return skipped, err
}

func versionsOf(ids []uuid.UUID, streams map[uuid.UUID]*streamState) []int64 {
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[i] = streams[id].version
	}
	return out
}
