package projections

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// txBeginner is a connection or a transaction: where a batch runs.
type txBeginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// catchUpOn applies, with the projector's batches, up to limit events after
// from (and not past upTo, when set) to the tables the search path names, in
// a transaction (or savepoint) of on. It returns the new checkpoint and how
// many events it applied, after handing them to applied (when set).
func (r *replayer) catchUpOn(ctx context.Context, on txBeginner, from eventstore.Checkpoint, upTo *eventstore.Checkpoint, limit int, applied func([]domain.Envelope)) (eventstore.Checkpoint, int, error) {
	tx, err := on.Begin(ctx)
	if err != nil {
		return from, 0, fmt.Errorf("replay: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	var envs []domain.Envelope
	if upTo != nil {
		// up to a stable head read before: not bounded again by what runs now
		envs, err = r.store.ReadBetween(ctx, tx, from, *upTo, limit)
	} else {
		envs, err = r.store.ReadAll(ctx, tx, from, limit)
	}
	if err != nil {
		return from, 0, err
	}
	if len(envs) == 0 {
		return from, 0, nil
	}
	b := newBatch()
	b.ahead = readAhead(ctx, r.store, tx)
	if err := b.load(ctx, tx, envs); err != nil {
		return from, 0, err
	}
	if err := b.fold(envs); err != nil {
		return from, 0, err
	}
	if err := b.write(ctx, tx); err != nil {
		return from, 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return from, 0, fmt.Errorf("replay: %w", err)
	}
	if applied != nil {
		applied(envs)
	}
	return eventstore.CheckpointOf(envs[len(envs)-1]), len(envs), nil
}

// swap applies the last events to the new tables and, unless this is a dry
// run, puts them in place, all in one transaction that holds the
// checkpoint's lock (no projector applies anything meanwhile) and, for the
// swap itself, the live tables' exclusive locks.
func (r *replayer) swap(ctx context.Context, conn *pgxpool.Conn, from eventstore.Checkpoint) (bool, eventstore.Checkpoint, error) {
	var pending []domain.Envelope // applied in this transaction: counted once it is done
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, from, fmt.Errorf("replay: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = `+quoteLiteral(strconv.FormatInt(r.opts.LockTimeout.Milliseconds(), 10)+"ms")); err != nil {
		return false, from, fmt.Errorf("replay: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING`, ReadModels); err != nil {
		return false, from, fmt.Errorf("replay: %w", err)
	}
	var txid string
	var pos int64
	if err := tx.QueryRow(ctx, `SELECT transaction_id::text, position FROM projection_checkpoints WHERE name = $1 FOR UPDATE`, ReadModels).Scan(&txid, &pos); err != nil {
		return false, from, fmt.Errorf("replay: lock checkpoint: %w", err)
	}
	live, err := eventstore.ParseCheckpoint(txid + "-" + strconv.FormatInt(pos, 10))
	if err != nil {
		return false, from, err
	}
	// The target: the end of the log readable now. Whatever becomes readable
	// later sorts after it.
	head, ok, err := r.store.StableHead(ctx, tx)
	if err != nil {
		return false, from, fmt.Errorf("replay: %w", err)
	}
	if !ok {
		head = from
	}
	// The live tables only hold readable events, so the readable head is
	// at or past their checkpoint, unless ordo prune removed the events
	// they were applied from last and the record of that is not readable
	// yet: then every event that is left up to the checkpoint is readable
	// and none lies between the head and the checkpoint.
	pruned := head.Less(live)
	if pruned {
		head = live
	}
	for from.Less(head) {
		next, n, err := r.catchUpOn(ctx, tx, from, &head, 10000, func(envs []domain.Envelope) { pending = append(pending, envs...) })
		if err != nil {
			return false, from, err
		}
		if n == 0 && pruned {
			from = head
			break
		}
		if n == 0 {
			return false, from, fmt.Errorf("replay: the log between %s and %s could not be read", from, head)
		}
		from = next
	}
	if _, err := tx.Exec(ctx, `SET LOCAL search_path TO public`); err != nil {
		return false, from, fmt.Errorf("replay: %w", err)
	}
	if r.report != nil {
		r.enter(PhaseVerify)
		for live.Less(head) { // bring the live tables to the same point
			next, n, err := r.catchUpOn(ctx, tx, live, &head, 10000, nil)
			if err != nil {
				return false, from, err
			}
			if n == 0 {
				return false, from, fmt.Errorf("replay: the log between %s and %s could not be read", live, head)
			}
			live = next
		}
		if err := r.compare(ctx, tx); err != nil {
			return false, from, err
		}
	}
	if r.opts.DryRun {
		r.count(pending)
		return false, from, nil
	}

	r.enter(PhaseSwap)
	if _, err := tx.Exec(ctx, `LOCK TABLE `+joinIdents(readModelTables)+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		return false, from, fmt.Errorf("replay: lock the live tables: %w", err)
	}
	views, err := dependentViews(ctx, tx)
	if err != nil {
		return false, from, err
	}
	stmts := []string{`CREATE SCHEMA ` + oldSchema}
	for _, t := range readModelTables {
		settings, err := tableSettings(ctx, tx, t)
		if err != nil {
			return false, from, err
		}
		stmts = append(stmts, settings...)
	}
	for _, t := range readModelTables {
		stmts = append(stmts, `ALTER TABLE public.`+t+` SET SCHEMA `+oldSchema, `ALTER TABLE `+replaySchema+`.`+t+` SET SCHEMA public`)
	}
	for _, v := range views {
		stmts = append(stmts, `CREATE OR REPLACE VIEW `+v.name+` AS `+v.def)
	}
	for _, t := range readModelTables {
		stmts = append(stmts, `DROP TABLE `+oldSchema+`.`+t) // no CASCADE: anything still using them stops the swap
	}
	stmts = append(stmts, `DROP SCHEMA `+oldSchema, `DROP SCHEMA `+replaySchema)
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return false, from, fmt.Errorf("replay: swap: %s: %w", s, err)
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE projection_checkpoints SET transaction_id = $2::text::xid8, position = $3, updated_at = now() WHERE name = $1`,
		ReadModels, strconv.FormatUint(from.TransactionID, 10), from.Position); err != nil {
		return false, from, fmt.Errorf("replay: move checkpoint: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, from, fmt.Errorf("replay: swap: %w", err)
	}
	r.count(pending)
	return true, from, nil
}

type view struct{ name, def string }

// dependentViews returns the views that read the live tables, with their
// definitions as written against the public schema.
func dependentViews(ctx context.Context, tx pgx.Tx) ([]view, error) {
	rows, err := tx.Query(ctx, `
SELECT DISTINCT v.oid::regclass::text, pg_get_viewdef(v.oid), v.oid
FROM pg_depend d
JOIN pg_rewrite w ON w.oid = d.objid
JOIN pg_class v ON v.oid = w.ev_class
WHERE d.classid = 'pg_rewrite'::regclass
  AND d.refclassid = 'pg_class'::regclass
  AND d.refobjid = ANY (SELECT ('public.' || t)::regclass FROM unnest($1::text[]) t)
  AND v.oid <> d.refobjid AND v.relkind = 'v'
ORDER BY v.oid`, readModelTables)
	if err != nil {
		return nil, fmt.Errorf("replay: find views: %w", err)
	}
	defer rows.Close()
	var out []view
	for rows.Next() {
		var v view
		var oid uint32
		if err := rows.Scan(&v.name, &v.def, &oid); err != nil {
			return nil, fmt.Errorf("replay: find views: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
