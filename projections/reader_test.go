package projections

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// TestRunListFindsFewRunsWithoutAScan checks that GET /runs reads a page of
// a filter that matches a handful of runs among many from an index, rather
// than walking the whole table in time order looking for them: a
// deployment, a state, a work queue or a tag with two or three runs among 100,000,
// or a tag no run has. Pages of rare tags, read the other way, are the
// pages the time-ordered query gives.
func TestRunListFindsFewRunsWithoutAScan(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := pgtest.Pool(t)
	_, err := pool.Exec(ctx, `
INSERT INTO flow_runs (id, name, flow_name, deployment_id, deployment_name, deployment_version, work_queue, tags, parameters,
    state_type, state_name, state_timestamp, scheduled_at, run_count, task_count, created_at, updated_at, stream_version)
SELECT gen_random_uuid(), 'run-' || i, 'flow', ('00000000-0000-4000-8000-00000000000' || (i % 2))::uuid,
    CASE WHEN i % 40000 = 0 THEN 'rare' ELSE 'common-' || i % 2 END, 1,
    CASE WHEN i % 40000 = 1 THEN 'rare' ELSE 'default' END,
    CASE WHEN i % 40000 = 3 THEN ARRAY['t', 'rare'] ELSE ARRAY['t', 'x' || i % 3] END, '{}',
    CASE WHEN i % 40000 = 2 THEN 'SCHEDULED' ELSE 'COMPLETED' END, 'State', t, t, 1, 1, t, t, 1
FROM generate_series(1, 100000) AS i, LATERAL (SELECT now() - i * interval '1 minute' AS t) AS ts`)
	if err != nil {
		t.Fatal(err)
	}
	// runs a schedule created ahead, which the default list leaves out
	// without stepping over them
	_, err = pool.Exec(ctx, `
INSERT INTO flow_runs (id, name, flow_name, deployment_id, deployment_name, deployment_version, work_queue, tags, parameters,
    state_type, state_name, state_timestamp, scheduled_at, run_count, task_count, created_at, updated_at, stream_version)
SELECT gen_random_uuid(), 'ahead-' || i, 'flow', ('00000000-0000-4000-8000-00000000000' || (i % 2))::uuid,
    'common-' || i % 2, 1, 'default', ARRAY['t', 'x' || i % 3], '{}', 'SCHEDULED', 'Scheduled', now(), now() + i * interval '1 second', 0, 1, now(), now(), 1
FROM generate_series(1, 20000) AS i`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE flow_runs`); err != nil {
		t.Fatal(err)
	}
	r := NewReader(eventstore.New(pool, domain.NewRegistry()))
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// Queries whose plan PostgreSQL may keep are also checked with the plan
	// it would keep for any value of their arguments.
	if _, err := conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `RESET plan_cache_mode`)
	later := runCursor(time.Now().Add(time.Hour), uuid.Max) // a cursor before the newest run
	var filters []RunFilter
	for _, f := range []RunFilter{
		{Deployment: "rare"}, {WorkQueue: "rare"}, {States: []domain.StateType{domain.Scheduled}},
		{Deployment: "rare", States: []domain.StateType{domain.Completed}}, {Deployment: "common-1"},
		{Deployment: "00000000-0000-4000-8000-000000000009"}, {Deployment: "no such name!"},
		{Tags: []string{"rare"}}, {Tags: []string{"nobody's"}}, {Tags: []string{"t", "rare"}}, {Tags: []string{"x1"}},
		{Tags: []string{"rare"}, Limit: 1}, {Tags: []string{"rare"}, Deployment: "common-0", Limit: 1},
		{}, {Times: RunsUpcoming}, {Times: RunsAll}, {Times: RunsUpcoming, Deployment: "common-1"}, {Times: RunsUpcoming, Tags: []string{"x1"}},
	} {
		filters = append(filters, f)
		f.Cursor = later
		filters = append(filters, f)
	}
	for _, f := range filters {
		rare := r.tags.rare(ctx, pool, f.Tags)
		if want := len(f.Tags) > 0 && f.Tags[len(f.Tags)-1] != "x1"; rare != want {
			t.Errorf("filter %+v: rare tag %v, want %v", f, rare, want)
		}
		q, err := runListQuery(f, rare)
		if err != nil {
			t.Fatal(err)
		}
		explain := func(on interface {
			QueryRow(context.Context, string, ...any) pgx.Row
		}, sql string, generic bool) {
			t.Helper()
			var plan []struct{ Plan planNode }
			var doc []byte
			args := q.args
			if generic {
				args = nil
			}
			if err := on.QueryRow(ctx, sql, args...).Scan(&doc); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(doc, &plan); err != nil {
				t.Fatal(err)
			}
			if read := plan[0].Plan.rowsRead(); read > 200 {
				t.Errorf("filter %+v (plan kept for any arguments: %v): %.0f rows read for one page; plan:\n%s", f, generic, read, doc)
			}
		}
		explain(pool, `EXPLAIN (ANALYZE, FORMAT JSON) `+q.sql, false)
		if !q.planEach && len(q.args) > 0 {
			if _, err := conn.Exec(ctx, `PREPARE page AS `+q.sql); err != nil {
				t.Fatal(err)
			}
			params := make([]string, len(q.args))
			for i, a := range q.args {
				switch a := a.(type) {
				case time.Time:
					params[i] = sqlLiteral(a.Format(time.RFC3339Nano))
				case uuid.UUID:
					params[i] = sqlLiteral(a.String())
				default:
					t.Fatalf("filter %+v: argument %T", f, a)
				}
			}
			explain(conn, `EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page(`+strings.Join(params, ", ")+`)`, true)
			if _, err := conn.Exec(ctx, `DEALLOCATE page`); err != nil {
				t.Fatal(err)
			}
		}
		if got := q.planEach; got != (f.Deployment == "no such name!" || f.Tags != nil && f.Tags[0] == "nobody's") {
			t.Errorf("filter %+v: planned each time %v", f, got)
		}
		if !rare {
			continue
		}
		for {
			got, err := r.RunList(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			r.tags.common = nil // the time-ordered query
			want, err := r.RunList(ctx, f)
			r.tags.read = time.Time{}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("filter %+v: the rare tag's page differs:\n got %+v\nwant %+v", f, got, want)
			}
			if got.NextCursor == nil {
				break
			}
			f.Cursor = *got.NextCursor
		}
	}
}

// planNode is a node of EXPLAIN (ANALYZE, FORMAT JSON).
type planNode struct {
	NodeType            string     `json:"Node Type"`
	ActualRows          float64    `json:"Actual Rows"`
	ActualLoops         float64    `json:"Actual Loops"`
	RowsRemovedByFilter float64    `json:"Rows Removed by Filter"`
	Plans               []planNode `json:"Plans"`
}

// rowsRead counts the rows that the scans of the plan read, kept or not.
func (n planNode) rowsRead() float64 {
	var read float64
	if n.NodeType == "Seq Scan" || n.NodeType == "Index Scan" || n.NodeType == "Bitmap Heap Scan" {
		read += (n.ActualRows + n.RowsRemovedByFilter) * max(n.ActualLoops, 1)
	}
	for _, c := range n.Plans {
		read += c.rowsRead()
	}
	return read
}
