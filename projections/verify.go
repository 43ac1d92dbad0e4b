package projections

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// VerifyReport is what a verifying replay found: differences between the
// rebuilt read models and the live ones, both at the same checkpoint, and
// events of the log that are not legal transitions.
type VerifyReport struct {
	Checkpoint     string      `json:"checkpoint"`     // where both were compared: "transaction-position"
	Position       int64       `json:"position"`       // the log position of the last event compared
	TransactionID  uint64      `json:"transaction_id"` // the transaction that wrote it
	Events         int64       `json:"events"`         // events validated
	Tables         []TableDiff `json:"tables"`
	Violations     []string    `json:"violations"` // the first maxSamples, in log order
	ViolationCount int         `json:"violation_count"`
	Clean          bool        `json:"clean"` // no difference and no violation
}

// TableDiff compares one rebuilt table with its live twin.
type TableDiff struct {
	Table     string    `json:"table"`
	LiveRows  int64     `json:"live_rows"`
	Rebuilt   int64     `json:"rebuilt_rows"`
	Missing   int64     `json:"missing"`   // rows only the live table has
	Extra     int64     `json:"extra"`     // rows only the rebuilt table has
	Different int64     `json:"different"` // rows with the same key and other values
	Samples   []RowDiff `json:"samples"`   // the first few, by key
}

// RowDiff is one row that differs, by its key ("id", or "task_run_id/attempt").
type RowDiff struct {
	Key     string   `json:"key"`
	Kind    string   `json:"kind"`    // missing, extra or different
	Columns []string `json:"columns"` // for different: the columns that differ
}

const maxSamples = 20

func (r *VerifyReport) addViolation(err error) {
	r.ViolationCount++
	if len(r.Violations) < maxSamples {
		r.Violations = append(r.Violations, err.Error())
	}
}

func (r *VerifyReport) differences() int64 {
	var n int64
	for _, t := range r.Tables {
		n += t.Missing + t.Extra + t.Different
	}
	return n
}

// String summarises the report in a few lines.
// OK reports whether the rebuilt tables equal the live ones and every event
// of the log is a legal transition.
func (r *VerifyReport) OK() bool { return r.ViolationCount == 0 && r.differences() == 0 }

func (r *VerifyReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "verified %d events, the log up to position %d (written by transaction %d)", r.Events, r.Position, r.TransactionID)
	if r.ViolationCount == 0 {
		b.WriteString(": every one a legal transition\n")
	} else {
		fmt.Fprintf(&b, ", %d illegal:\n", r.ViolationCount)
		for _, v := range r.Violations {
			fmt.Fprintf(&b, "  %s\n", v)
		}
	}
	for _, t := range r.Tables {
		fmt.Fprintf(&b, "%s: %d live rows, %d rebuilt, %d missing, %d extra, %d different\n", t.Table, t.LiveRows, t.Rebuilt, t.Missing, t.Extra, t.Different)
		for _, s := range t.Samples {
			fmt.Fprintf(&b, "  %s %s %s\n", s.Kind, s.Key, strings.Join(s.Columns, ","))
		}
	}
	return b.String()
}

// tableKeys are the keys that identify a row of each read-model table,
// by which rows are matched and differences reported.
var tableKeys = map[string][]string{
	"deployments":       {"id"},
	"flow_runs":         {"id"},
	"task_runs":         {"id"},
	"task_run_attempts": {"task_run_id", "attempt"},
	"state_history":     {"stream_id", "version"},
}

// compare fills the report's table differences, comparing public's tables
// with the replay schema's, in tx.
func (r *replayer) compare(ctx context.Context, tx pgx.Tx) error {
	for _, t := range readModelTables {
		d, err := compareTable(ctx, tx, t)
		if err != nil {
			return err
		}
		r.report.Tables = append(r.report.Tables, d)
	}
	return nil
}

func compareTable(ctx context.Context, tx pgx.Tx, table string) (TableDiff, error) {
	d := TableDiff{Table: table, Samples: []RowDiff{}}
	keys := tableKeys[table]
	if len(keys) == 0 {
		return d, fmt.Errorf("verify: no key known for %s", table)
	}
	rows, err := tx.Query(ctx, `SELECT attname FROM pg_attribute WHERE attrelid = ('public.' || $1)::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, table)
	if err != nil {
		return d, fmt.Errorf("verify: columns of %s: %w", table, err)
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return d, fmt.Errorf("verify: columns of %s: %w", table, err)
	}
	id := func(s string) string { return pgx.Identifier{s}.Sanitize() }
	var keyText, join, colDiffs, aRow, bRow []string
	for _, k := range keys {
		keyText = append(keyText, fmt.Sprintf("coalesce(a.%s, b.%s)::text", id(k), id(k)))
		join = append(join, fmt.Sprintf("a.%s = b.%s", id(k), id(k)))
	}
	for _, c := range cols {
		colDiffs = append(colDiffs, fmt.Sprintf("CASE WHEN a.%s IS DISTINCT FROM b.%s THEN %s END", id(c), id(c), quoteLiteral(c)))
		aRow = append(aRow, "a."+id(c))
		bRow = append(bRow, "b."+id(c))
	}
	k0 := id(keys[0])
	sql := fmt.Sprintf(`
SELECT concat_ws('/', %s),
       CASE WHEN b.%s IS NULL THEN 'missing' WHEN a.%s IS NULL THEN 'extra' ELSE 'different' END,
       array_remove(ARRAY[%s], NULL)
FROM public.%s a FULL JOIN %s.%s b ON %s
WHERE a.%s IS NULL OR b.%s IS NULL OR (%s) IS DISTINCT FROM (%s)
ORDER BY 1`,
		strings.Join(keyText, ", "), k0, k0, strings.Join(colDiffs, ", "), id(table), replaySchema, id(table),
		strings.Join(join, " AND "), k0, k0, strings.Join(aRow, ", "), strings.Join(bRow, ", "))
	diffRows, err := tx.Query(ctx, sql)
	if err != nil {
		return d, fmt.Errorf("verify: compare %s: %w", table, err)
	}
	defer diffRows.Close()
	for diffRows.Next() {
		var rd RowDiff
		if err := diffRows.Scan(&rd.Key, &rd.Kind, &rd.Columns); err != nil {
			return d, fmt.Errorf("verify: compare %s: %w", table, err)
		}
		switch rd.Kind {
		case "missing":
			d.Missing++
		case "extra":
			d.Extra++
		default:
			d.Different++
		}
		if len(d.Samples) < maxSamples {
			if rd.Columns == nil {
				rd.Columns = []string{}
			}
			d.Samples = append(d.Samples, rd)
		}
	}
	if err := diffRows.Err(); err != nil {
		return d, fmt.Errorf("verify: compare %s: %w", table, err)
	}
	err = tx.QueryRow(ctx, fmt.Sprintf(`SELECT (SELECT count(*) FROM public.%s), (SELECT count(*) FROM %s.%s)`, id(table), replaySchema, id(table))).Scan(&d.LiveRows, &d.Rebuilt)
	if err != nil {
		return d, fmt.Errorf("verify: count %s: %w", table, err)
	}
	return d, nil
}
