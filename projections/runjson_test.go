package projections

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// TestAppendRunListJSONMatchesRunList checks the binary path of GET /runs
// against encoding/json of the page RunList returns, on stored runs of
// every shape, through every page of several filters: the same document,
// byte for byte, stored JSON documents included.
func TestAppendRunListJSONMatchesRunList(t *testing.T) {
	ctx := t.Context()
	pool := pgtest.Pool(t)
	r := NewReader(eventstore.New(pool, domain.NewRegistry()))
	_, err := pool.Exec(ctx, `
INSERT INTO flow_runs (id, name, flow_name, deployment_id, deployment_name, deployment_version, work_queue, tags, parameters,
    state_type, state_name, state_timestamp, state_message, scheduled_at, started_at, ended_at, run_count,
    parent_task_run_id, parent_flow_run_id, auto_scheduled, result, task_count, created_at, updated_at, stream_version)
SELECT gen_random_uuid(), (ARRAY['plain', 'a "quoted" name', E'tab\tand\nnewline', '<b>&amp;</b>', 'café ☕', E'\u2028'])[1 + i % 6],
    'flow-' || i % 3, ('00000000-0000-4000-8000-00000000000' || (i % 3))::uuid, 'dep-' || i % 3, i % 4 - 1,
    CASE WHEN i % 2 = 0 THEN 'ml' ELSE 'default' END,
    CASE WHEN i % 4 = 0 THEN '{}'::text[] ELSE ARRAY['t' || i % 5, 'ünï "x"'] END,
    (ARRAY['{}', '{"table": "houses", "n": [1, 2.5, null], "s": "\u00e9\\n"}', '[]', '"x"',
        '{"html": "<b>&amp;</b>", "seps": "\u2028\u2029", "q": "a \"b\" : c, d", "deep": {"a": [{"b": " "}]}}'])[1 + i % 5]::jsonb,
    (ARRAY['COMPLETED', 'FAILED', 'RUNNING', 'SCHEDULED'])[1 + i % 4], 'State ' || i, t, CASE WHEN i % 3 = 0 THEN '' ELSE 'why: ' || i END,
    -- equal times, microseconds, times before 2000 and far ahead
    CASE WHEN i % 7 = 0 THEN '1999-12-31 23:59:59.999999+00'::timestamptz WHEN i % 11 = 0 THEN '2263-01-01 00:00:00.000001+00'::timestamptz ELSE t END,
    CASE WHEN i % 2 = 0 THEN t END, CASE WHEN i % 3 = 0 THEN t + interval '1.5 s' END, i % 3,
    CASE WHEN i % 5 = 0 THEN gen_random_uuid() END, CASE WHEN i % 5 = 1 THEN gen_random_uuid() END, i % 2 = 0,
    CASE WHEN i % 3 = 1 THEN '{"rmse": 0.25}'::jsonb WHEN i % 3 = 2 THEN 'null'::jsonb END, i * 1000, t, t, 1
FROM generate_series(1, 230) AS i, LATERAL (SELECT '2026-11-28 12:00:00+00'::timestamptz - (i / 3) * interval '1.000001 s' AS t) AS ts`)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []RunFilter{
		{}, {Limit: 7}, {Limit: 7, Times: RunsAll}, {Limit: 200}, {States: []domain.StateType{domain.Failed}, Limit: 9}, {Deployment: "dep-1", Limit: 13},
		{Tags: []string{"t2"}, Limit: 5}, {Name: "café"}, {WorkQueue: "ml", Limit: 1}, {Deployment: "nobody"},
		{Times: RunsUpcoming, Limit: 3}, {Times: RunsAll, Limit: 11},
	} {
		pages := 0
		for {
			want, err := r.RunList(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.AppendRunListJSON(ctx, []byte("prefix"), f)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(got), "prefix") || !strings.HasSuffix(string(got), "}\n") {
				t.Fatalf("filter %+v, page %d: not appended to the buffer as one line: %q", f, pages, got)
			}
			w, err := json.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if string(got[len("prefix"):]) != string(w)+"\n" {
				t.Fatalf("filter %+v, page %d: AppendRunListJSON differs from RunList:\n got %s\nwant %s", f, pages, got, w)
			}
			pages++
			if want.NextCursor == nil {
				break
			}
			f.Cursor = *want.NextCursor
		}
		if f.Limit == 7 && f.Times == RunsAll && pages != 33 {
			t.Fatalf("230 runs in pages of 7: %d pages", pages)
		}
	}
	if _, err := r.AppendRunListJSON(ctx, nil, RunFilter{Limit: MaxPageSize + 1}); domain.ErrorCode(err) != domain.CodeInvalid {
		t.Fatalf("a page too large: %v", err)
	}
}

// TestAppendRFC3339Micro checks the fast time format against
// appendJSONTime over instants spread across four centuries and beyond,
// at several offsets, including seconds offsets that RFC 3339 rounds.
func TestAppendRFC3339Micro(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	offsets := []int{0, 3600, -12600, 19800, 50400, -43200, 5*3600 + 1800 + 17}
	lo, hi := time.Date(-5, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro(), time.Date(10001, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
	recent := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC).UnixMicro()
	var c dateCache // shared, as by the times of a page: hits and misses
	for i := range 200_000 {
		us := lo + rng.Int64N(hi-lo)
		if i%3 == 0 {
			us = recent + (us-lo)%86_400_000_000 + 86_400_000_000*int64(i%5) // days repeat
		}
		switch i % 4 {
		case 1:
			us -= us % 1_000_000 // whole seconds
		case 2:
			us -= us % 86_400_000_000 // midnight UTC
		}
		off := offsets[i%len(offsets)]
		want := string(appendJSONTime(nil, time.UnixMicro(us).In(time.FixedZone("", off))))
		if got := string(c.appendRFC3339Micro(nil, us, off)); got != want {
			t.Fatalf("%d µs at offset %d: got %s, want %s", us, off, got, want)
		}
	}
}

func BenchmarkTimeFormat(b *testing.B) {
	t := time.Date(2026, 11, 28, 12, 34, 56, 123456000, time.UTC)
	buf := make([]byte, 0, 64)
	b.Run("AppendFormat", func(b *testing.B) {
		for range b.N {
			buf = appendJSONTime(buf[:0], t)
		}
	})
	b.Run("appendRFC3339Micro", func(b *testing.B) {
		var c dateCache
		for range b.N {
			buf = c.appendRFC3339Micro(buf[:0], t.UnixMicro(), 0)
		}
	})
}

// TestAppendCompactJSON checks the compaction of stored JSON against
// encoding/json's own, on documents printed with whitespace everywhere it
// may go and without escaping HTML, from random values whose strings hold
// quotes, backslashes, <, >, &, U+2028 and U+2029.
func TestAppendCompactJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"a", " ", ":", ",", `"`, `\`, `\\"`, "<", ">", "&", "\u2028", "\u2029", "é", "{", "]", "\n", "\t"}
	str := func() string {
		var b strings.Builder
		for range rng.IntN(6) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	var value func(depth int) any
	value = func(depth int) any {
		switch k := rng.IntN(7); {
		case depth > 3 || k == 0:
			return str()
		case k == 1:
			return rng.Float64() * 1000
		case k == 2:
			return nil
		case k == 3:
			return rng.IntN(2) == 0
		case k == 4:
			a := make([]any, rng.IntN(4))
			for i := range a {
				a[i] = value(depth + 1)
			}
			return a
		default:
			m := map[string]any{}
			for range rng.IntN(4) {
				m[str()] = value(depth + 1)
			}
			return m
		}
	}
	for range 5000 {
		v := value(0)
		var spaced strings.Builder
		enc := json.NewEncoder(&spaced)
		enc.SetEscapeHTML(false)
		enc.SetIndent(" ", "\t ")
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(json.RawMessage(spaced.String()))
		if err != nil {
			t.Fatal(err)
		}
		if got := appendCompactJSON([]byte("x"), []byte(spaced.String())); string(got) != "x"+string(want) {
			t.Fatalf("compacting %q:\n got %q\nwant %q", spaced.String(), got[1:], want)
		}
	}
}
