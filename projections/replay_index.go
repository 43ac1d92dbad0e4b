package projections

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// tableOn matches the table of an index definition.
var tableOn = regexp.MustCompile(` ON (ONLY )?(public\.)?([a-z_]+) `)

// index builds, on each new table, the constraints and indexes its live
// twin has, under the same names, and analyzes it; tables in parallel.
func (r *replayer) index(ctx context.Context, tables ...string) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, t := range tables {
		g.Go(func() error {
			conn, err := r.pool.Acquire(ctx)
			if err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			defer conn.Release()
			var stmts []string
			rows, err := conn.Query(ctx, `
SELECT format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', $2::text, $1::text, c.conname, pg_get_constraintdef(c.oid))
FROM pg_constraint c
WHERE c.conrelid = ('public.' || $1)::regclass AND c.contype IN ('p', 'u', 'x')
UNION ALL
SELECT pg_get_indexdef(x.indexrelid)
FROM pg_index x
WHERE x.indrelid = ('public.' || $1)::regclass
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid AND c.conrelid = x.indrelid)`, t, replaySchema)
			if err != nil {
				return fmt.Errorf("replay: read indexes of %s: %w", t, err)
			}
			for rows.Next() {
				var s string
				if err := rows.Scan(&s); err != nil {
					rows.Close()
					return fmt.Errorf("replay: read indexes of %s: %w", t, err)
				}
				if m := tableOn.FindStringSubmatchIndex(s); strings.HasPrefix(s, "CREATE") && m != nil {
					s = s[:m[0]] + " ON " + replaySchema + "." + s[m[6]:m[7]] + " " + s[m[1]:]
				}
				stmts = append(stmts, s)
			}
			if err := rows.Err(); err != nil {
				return fmt.Errorf("replay: read indexes of %s: %w", t, err)
			}
			if err := r.build(ctx, conn.Conn(), stmts); err != nil {
				return err
			}
			// Statistics for the planner, right away, of the columns that
			// queries filter and sort on (jsonb documents are only shown;
			// autovacuum analyzes them later).
			var cols string
			if err := conn.QueryRow(ctx, `
SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
WHERE attrelid = ('public.' || $1)::regclass AND attnum > 0 AND NOT attisdropped AND atttypid <> 'jsonb'::regtype`, t).Scan(&cols); err != nil {
				return fmt.Errorf("replay: columns of %s: %w", t, err)
			}
			if _, err := conn.Exec(ctx, `SET default_statistics_target = 20`); err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			st := time.Now()
			if _, err := conn.Exec(ctx, `ANALYZE `+replaySchema+`.`+t+` (`+cols+`)`); err != nil {
				return fmt.Errorf("replay: analyze %s: %w", t, err)
			}
			r.opts.Logger.Debug("replay: table analyzed", "table", t, "took", time.Since(st))
			_, err = conn.Exec(ctx, `RESET default_statistics_target`)
			return err
		})
	}
	return g.Wait()
}

// indexLanes is how many of a table's indexes are built at once. Each
// build is one PostgreSQL process, and the tables are built at once too:
// two lanes keep both cores of a small machine busy when a big table's
// indexes are what is left.
const indexLanes = 2

// laneWait is how long build waits for a connection for another lane.
const laneWait = 100 * time.Millisecond

// build runs a table's index statements, in up to indexLanes lanes: one
// on conn, the others on connections of the pool that it gets within
// laneWait. It must not wait longer while it holds conn: the tables are
// built at once, and on a small pool each would hold one and wait for
// another.
func (r *replayer) build(ctx context.Context, conn *pgx.Conn, stmts []string) error {
	conns := []*pgx.Conn{conn}
	for len(conns) < min(indexLanes, len(stmts)) {
		actx, cancel := context.WithTimeout(ctx, laneWait)
		pc, err := r.pool.Acquire(actx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			break // the pool is busy: fewer lanes
		}
		defer pc.Release()
		conns = append(conns, pc.Conn())
	}
	lanes := len(conns)
	g, ctx := errgroup.WithContext(ctx)
	for lane, c := range conns {
		g.Go(func() error {
			if _, err := c.Exec(ctx, `SET maintenance_work_mem = '256MB'`); err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			defer c.Exec(context.WithoutCancel(ctx), `RESET maintenance_work_mem`)
			for i := lane; i < len(stmts); i += lanes {
				st := time.Now()
				if _, err := c.Exec(ctx, stmts[i]); err != nil {
					return fmt.Errorf("replay: %s: %w", stmts[i], err)
				}
				r.opts.Logger.Debug("replay: index built", "statement", stmts[i], "took", time.Since(st))
			}
			return nil
		})
	}
	return g.Wait()
}
