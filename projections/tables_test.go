package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/internal/pgtest"
)

// TestTableDescriptorsMatchTheDatabase fails when a migration and a table
// descriptor disagree on a read-model table's columns or their types.
func TestTableDescriptorsMatchTheDatabase(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	ctx := context.Background()
	for _, tbl := range []table{deploymentsTable, flowRunsTable, taskRunsTable, attemptsTable, historyTable} {
		rows, err := pool.Query(ctx, `
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = ('public.' || $1)::regclass AND attnum > 0 AND NOT attisdropped`, tbl.name)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]string{}
		var name, typ string
		if _, err := pgx.ForEachRow(rows, []any{&name, &typ}, func() error { have[name] = typ; return nil }); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{}
		for _, c := range tbl.columns {
			if err := pool.QueryRow(ctx, `SELECT $1::text::regtype::text`, c.typ).Scan(&typ); err != nil {
				t.Fatalf("%s.%s: type %q: %v", tbl.name, c.name, c.typ, err)
			}
			want[c.name] = typ
		}
		all := maps.Clone(have)
		maps.Copy(all, want)
		for _, c := range slices.Sorted(maps.Keys(all)) {
			if have[c] != want[c] {
				t.Errorf("%s.%s: the database has type %q, the descriptor %q", tbl.name, c, have[c], want[c])
			}
		}
	}
	if want := []string{"deployments", "flow_runs", "task_runs", "task_run_attempts", "state_history"}; !slices.Equal(readModelTables, want) {
		t.Errorf("read-model tables %v, want %v", readModelTables, want)
	}
}

// TestEncodersWriteEveryFieldIntoItsColumn writes a row whose every field
// holds a value of its own with each binary encoder, in its table's column
// order, and the same row by the JSON names of its fields (the way
// jsonb_to_recordset reads the projector's row documents): the two must
// be equal. It fails when an encoder, a descriptor and a row struct
// disagree on a column.
func TestEncodersWriteEveryFieldIntoItsColumn(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	ctx := context.Background()

	var (
		deploy  deploymentOut
		flow    flowRunOut
		task    taskRunOut
		attempt attemptRow
		history historyRow
	)
	for _, tc := range []struct {
		table  table
		row    any // a pointer to the row, filled here
		encode func(*copyBuf) error
	}{
		{deploymentsTable, &deploy, func(c *copyBuf) error { return deploy.encode(c) }},
		{flowRunsTable, &flow, func(c *copyBuf) error { return flow.encode(c) }},
		{taskRunsTable, &task, func(c *copyBuf) error {
			spec, err := json.Marshal(task.Task)
			return errors.Join(err, task.encode(c, spec))
		}},
		{attemptsTable, &attempt, func(c *copyBuf) error { return attempt.encode(c) }},
		{historyTable, &history, func(c *copyBuf) error { return history.encode(c) }},
	} {
		t.Run(tc.table.name, func(t *testing.T) {
			n := 0
			fill(reflect.ValueOf(tc.row).Elem(), &n)
			doc, err := json.Marshal(tc.row)
			if err != nil {
				t.Fatal(err)
			}
			err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				for _, name := range []string{"encoded", "by_name"} {
					if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TEMP TABLE %s (LIKE public.%s) ON COMMIT DROP`, name, tc.table.name)); err != nil {
						return err
					}
				}
				done := false
				src := func(c *copyBuf) (int, error) {
					if done {
						return 0, nil
					}
					done = true
					return 1, tc.encode(c)
				}
				if _, _, err := copyIn(ctx, tx.Conn().PgConn(), "encoded", tc.table.names(), src, 0); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `INSERT INTO by_name SELECT * FROM jsonb_populate_record(NULL::by_name, $1::jsonb)`, doc); err != nil {
					return err
				}
				var same bool
				var encoded, byName string
				if err := tx.QueryRow(ctx, `SELECT to_jsonb(e) = to_jsonb(b), to_jsonb(e)::text, to_jsonb(b)::text FROM encoded e, by_name b`).Scan(&same, &encoded, &byName); err != nil {
					return err
				}
				if !same {
					t.Errorf("the encoder wrote\n%s\nthe fields by name are\n%s", encoded, byName)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// fill gives every field under v a value of its own, counted by n.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Interface().(type) {
	case time.Time:
		v.Set(reflect.ValueOf(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(*n) * time.Minute)))
		return
	case json.RawMessage:
		v.Set(reflect.ValueOf(json.RawMessage(fmt.Sprintf(`{"field": %d}`, *n))))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("value %d", *n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n))
	case reflect.Float64:
		v.SetFloat(float64(*n) + 0.5)
	case reflect.Array: // a UUID
		for i := range v.Len() {
			v.Index(i).Set(reflect.ValueOf(byte(*n + i)).Convert(v.Type().Elem()))
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), n)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		val := reflect.New(v.Type().Elem()).Elem()
		fill(val, n)
		m.SetMapIndex(reflect.ValueOf(fmt.Sprintf("key %d", *n)).Convert(v.Type().Key()), val)
		v.Set(m)
	case reflect.Interface:
		v.Set(reflect.ValueOf(fmt.Sprintf("value %d", *n)))
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), n)
			}
		}
	}
}
