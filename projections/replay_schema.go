package projections

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// prepare creates the new tables, empty and without indexes, in the replay
// schema: the same columns, defaults, checks, comments and privileges as
// the live ones.
func (r *replayer) prepare(ctx context.Context) error {
	return pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DROP SCHEMA IF EXISTS `+replaySchema+` CASCADE; CREATE SCHEMA `+replaySchema); err != nil {
			return fmt.Errorf("replay: create schema: %w", err)
		}
		if _, err := tx.Exec(ctx, `COMMENT ON SCHEMA `+replaySchema+` IS 'Read models being rebuilt by ordo replay; moved into public when done.'`); err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		for _, t := range readModelTables {
			if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s.%s (LIKE public.%s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS INCLUDING STORAGE INCLUDING COMPRESSION)`,
				replaySchema, t, t)); err != nil {
				return fmt.Errorf("replay: create %s: %w", t, err)
			}
			// No autovacuum while the rows go in: it scanned the table being
			// built and was cancelled at the swap, its work lost. The swap
			// gives the table the live one's settings.
			if _, err := tx.Exec(ctx, fmt.Sprintf(`ALTER TABLE %s.%s SET (autovacuum_enabled = false)`, replaySchema, t)); err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			var comment *string
			if err := tx.QueryRow(ctx, `SELECT obj_description(('public.' || $1)::regclass, 'pg_class')`, t).Scan(&comment); err != nil {
				return fmt.Errorf("replay: read comment of %s: %w", t, err)
			}
			if comment != nil {
				if _, err := tx.Exec(ctx, fmt.Sprintf(`COMMENT ON TABLE %s.%s IS %s`, replaySchema, t, quoteLiteral(*comment))); err != nil {
					return fmt.Errorf("replay: comment %s: %w", t, err)
				}
			}
			// the privileges other roles (a read-only pgadmin user) have
			rows, err := tx.Query(ctx, `
SELECT format('GRANT %s ON %I.%I TO %s', a.privilege_type, $2::text, $1::text,
              CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END)
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.oid = ('public.' || $1)::regclass AND a.grantee <> c.relowner`, t, replaySchema)
			if err != nil {
				return fmt.Errorf("replay: read privileges on %s: %w", t, err)
			}
			grants, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return fmt.Errorf("replay: read privileges on %s: %w", t, err)
			}
			for _, g := range grants {
				if _, err := tx.Exec(ctx, g); err != nil {
					return fmt.Errorf("replay: %s: %w", g, err)
				}
			}
		}
		return nil
	})
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// tableSettings returns the statements that give the new table t the
// storage parameters of the live one (fillfactor, autovacuum tuning), which
// CREATE TABLE LIKE does not copy, in place of those it was built with.
func tableSettings(ctx context.Context, tx pgx.Tx, t string) ([]string, error) {
	var live []string
	if err := tx.QueryRow(ctx, `SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = ('public.' || $1)::regclass`, t).Scan(&live); err != nil {
		return nil, fmt.Errorf("replay: read the settings of %s: %w", t, err)
	}
	stmts := []string{`ALTER TABLE ` + replaySchema + `.` + t + ` RESET (autovacuum_enabled)`}
	var set []string
	for _, o := range live {
		name, value, ok := strings.Cut(o, "=")
		if !ok {
			continue
		}
		set = append(set, pgx.Identifier{name}.Sanitize()+" = "+quoteLiteral(value))
	}
	if len(set) > 0 {
		stmts = append(stmts, `ALTER TABLE `+replaySchema+`.`+t+` SET (`+strings.Join(set, ", ")+`)`)
	}
	return stmts, nil
}
