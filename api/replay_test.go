package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/projections"
	"github.com/ordoflow/ordo/projections/projtest"
)

// mixedWorkload writes runs that end every way a run can: completed (with
// a retried task), cached, failed, cancelled, crashed, and some that are
// still scheduled or running.
func mixedWorkload(t *testing.T, b bundle) []*projtest.Run {
	t.Helper()
	base := time.Date(2026, 4, 1, 8, 0, 0, 0, time.UTC)
	var runs []*projtest.Run
	exit := 2
	for i := range 24 {
		r := b.log.CreateRun(projtest.RunSpec{
			Name: fmt.Sprintf("mixed-%02d", i), DeploymentName: []string{"etl", "ml"}[i%2], WorkQueue: []string{"cpu", "gpu"}[i%2],
			Tags: []string{"prod", []string{"nightly", "hourly"}[i%2]}, Parameters: map[string]any{"i": i}, ScheduledAt: base.Add(time.Duration(i) * time.Minute),
		})
		runs = append(runs, r)
		switch i % 8 {
		case 0: // completed, load retried once
			r.Complete()
		case 1: // cached
			r.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
			r.Task("load", domain.TaskRunCached{Result: json.RawMessage(`{"rows": 7}`), CacheKey: "k-load", SourceTaskRunID: r.Tasks["load"]})
			r.Succeed("left", 1, "L")
			r.Succeed("right", 1, "R")
			r.Succeed("join", 1, 1)
			r.Flow(domain.FlowRunCompleted{Result: json.RawMessage(`1`)})
		case 2: // failed
			r.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
			r.Succeed("load", 1, "rows")
			r.Task("right", domain.TaskRunStarted{Attempt: 1, Worker: "w2"},
				domain.TaskRunFailed{AttemptFailure: domain.AttemptFailure{Attempt: 1, Error: "boom", ExitCode: &exit, LogTail: []string{"Traceback", "boom"}}})
			r.Succeed("left", 1, "L")
			r.Task("join", domain.TaskRunCancelled{NotRun: true})
			r.Flow(domain.FlowRunFailed{Message: "task right failed"})
		case 3: // cancelled while running
			r.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
			r.Task("load", domain.TaskRunStarted{Attempt: 1, Worker: "w1"})
			r.Flow(domain.FlowRunCancelling{})
			r.Task("load", domain.TaskRunCancelled{})
			for _, n := range []string{"left", "right", "join"} {
				r.Task(n, domain.TaskRunCancelled{NotRun: true})
			}
			r.Flow(domain.FlowRunCancelled{})
		case 4: // crashed: the worker died
			r.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
			r.Task("load", domain.TaskRunStarted{Attempt: 1, Worker: "w3"},
				domain.TaskRunFailed{AttemptFailure: domain.AttemptFailure{Attempt: 1, Error: "worker w3 stopped", Crashed: true}})
			for _, n := range []string{"left", "right", "join"} {
				r.Task(n, domain.TaskRunCancelled{NotRun: true})
			}
			r.Flow(domain.FlowRunCrashed{Message: "task load crashed"})
		case 5: // timed out, then retried by a user and completed
			r.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
			r.Task("load", domain.TaskRunStarted{Attempt: 1, Worker: "w1"},
				domain.TaskRunFailed{AttemptFailure: domain.AttemptFailure{Attempt: 1, Error: "timed out after 60s", TimedOut: true}})
			for _, n := range []string{"left", "right", "join"} {
				r.Task(n, domain.TaskRunCancelled{NotRun: true})
			}
			r.Flow(domain.FlowRunFailed{Message: "task load timed out"})
			r.Flow(domain.FlowRunRetried{TaskNames: []string{"load", "left", "right", "join"}})
			for _, n := range []string{"load", "left", "right", "join"} {
				r.Task(n, domain.TaskRunReset{})
			}
			r.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
			r.Succeed("load", 2, "again")
			r.Succeed("left", 1, "L")
			r.Succeed("right", 1, "R")
			r.Succeed("join", 1, 2)
			r.Flow(domain.FlowRunCompleted{Result: json.RawMessage(`2`)})
		case 6: // running, with a stale result refused
			r.Flow(domain.FlowRunPending{}, domain.FlowRunStarted{})
			r.Task("load", domain.TaskRunStarted{Attempt: 1, Worker: "w1"},
				domain.TaskRunRetryScheduled{AttemptFailure: domain.AttemptFailure{Attempt: 1, Error: "connection refused"}, RetryAt: base.Add(time.Hour)},
				domain.TaskRunStarted{Attempt: 2, Worker: "w2"},
				domain.TaskRunResultRefused{Attempt: 1, CurrentAttempt: 2, Outcome: "completed"})
		case 7: // still scheduled, late
			r.Flow(domain.FlowRunLate{})
		}
	}
	return runs
}

// TestAPIReplayByteIdentical runs a mixed workload, replays the read
// models with verification while the projector runs, and checks that every
// read endpoint answers byte for byte as before.
func TestAPIReplayByteIdentical(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var deps []projections.Deployment
	for _, name := range []string{"etl", "ml", "gone"} {
		var d projections.Deployment
		r := b.do(t, "POST", "/api/v1/deployments", deploymentBody(name, nil))
		r.decode(t, &d)
		deps = append(deps, d)
	}
	b.do(t, "POST", "/api/v1/deployments", deploymentBody("ml", func(m map[string]any) { m["description"] = "v2" }))
	b.do(t, "POST", "/api/v1/deployments/"+deps[0].ID.String()+"/pause", nil)
	b.do(t, "DELETE", "/api/v1/deployments/"+deps[2].ID.String(), nil)
	runs := mixedWorkload(t, b)
	b.sync(t)

	paths := []string{
		"/api/v1/deployments", "/api/v1/deployments?limit=1", "/api/v1/deployments/" + deps[0].ID.String(), "/api/v1/deployments/" + deps[1].ID.String(),
		"/api/v1/runs", "/api/v1/runs?limit=5", "/api/v1/runs?state=FAILED,CRASHED", "/api/v1/runs?state=COMPLETED&tag=nightly",
		"/api/v1/runs?deployment=ml&work_queue=gpu", "/api/v1/runs?name=mixed-1", "/api/v1/runs?state=RUNNING,SCHEDULED,CANCELLED",
		"/api/v1/events?limit=200", "/api/v1/events?type=TaskRunFailed,TaskRunCached,TaskRunResultRefused",
	}
	var next projections.Page[projections.FlowRun]
	b.do(t, "GET", "/api/v1/runs?limit=5", nil).decode(t, &next)
	paths = append(paths, "/api/v1/runs?limit=5&cursor="+url.QueryEscape(*next.NextCursor))
	for _, r := range runs {
		id := r.ID.String()
		paths = append(paths, "/api/v1/runs/"+id, "/api/v1/runs/"+id+"/graph", "/api/v1/runs/"+id+"/events")
		var trail projections.Page[projections.Event]
		b.do(t, "GET", "/api/v1/runs/"+id+"/events", nil).decode(t, &trail)
		for _, e := range trail.Items[len(trail.Items)/2:][:1] {
			paths = append(paths, fmt.Sprintf("/api/v1/runs/%s/history?at=%d", id, e.Position), "/api/v1/runs/"+id+"/history?at="+url.QueryEscape(e.Cursor))
		}
	}
	// the global log's pages are read until they hold what the log does
	var all, failures int
	if err := b.pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE type IN ('TaskRunFailed', 'TaskRunCached', 'TaskRunResultRefused')) FROM events`).Scan(&all, &failures); err != nil {
		t.Fatal(err)
	}
	full := map[string]int{
		"/api/v1/events?limit=200": min(all, projections.MaxPageSize),
		"/api/v1/events?type=TaskRunFailed,TaskRunCached,TaskRunResultRefused": min(failures, projections.DefaultPageSize),
	}
	get := func() map[string][]byte {
		out := map[string][]byte{}
		for _, p := range paths {
			var r response
			if want, isLog := full[p]; isLog {
				r = b.fullEventPage(t, p, want)
			} else {
				r = b.do(t, "GET", p, nil)
			}
			if r.status != 200 {
				t.Fatalf("%s: %d %s", p, r.status, r.body)
			}
			out[p] = r.body
		}
		return out
	}
	before := get()

	// a read-only role for people, as pgadmin would use
	role := "ordo_reader_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	if _, err := b.pool.Exec(ctx, `CREATE ROLE `+role+`; GRANT SELECT ON flow_runs TO `+role); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = b.pool.Exec(context.Background(), `REVOKE ALL ON flow_runs FROM `+role)
		_, _ = b.pool.Exec(context.Background(), `DROP ROLE `+role)
	})

	var phases []string
	res, err := projections.Replay(ctx, b.pool, b.store, projections.ReplayOptions{
		Verify: true,
		Progress: func(p projections.ReplayProgress) {
			if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
				phases = append(phases, p.Phase)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Swapped || res.Verify == nil || !res.Verify.Clean || res.Events != int64(b.eventCount(t)) {
		t.Fatalf("replay: swapped %t, %d events of %d, report:\n%s", res.Swapped, res.Events, b.eventCount(t), res.Verify)
	}
	if res.Verify.Events != res.Events || len(res.Verify.Tables) != 5 || res.Verify.Tables[1].LiveRows != 24 {
		t.Fatalf("report: %+v", res.Verify)
	}
	if fmt.Sprint(phases) != "[load index catch-up verify swap done]" {
		t.Errorf("progress phases: %v", phases)
	}
	b.sync(t)
	after := get()
	for _, p := range paths {
		if !bytes.Equal(before[p], after[p]) {
			t.Errorf("%s differs after the replay:\nbefore %s\nafter  %s", p, before[p], after[p])
		}
	}

	// The projector goes on with the new tables, and the views people read
	// in pgadmin read them.
	runs[7].Flow(domain.FlowRunPending{})
	b.sync(t)
	var got projections.FlowRun
	b.do(t, "GET", "/api/v1/runs/"+runs[7].ID.String(), nil).decode(t, &got)
	if got.State.Type != domain.Pending {
		t.Fatalf("after the replay the projector does not apply new events: %+v", got.State)
	}
	var transitions int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM state_transitions WHERE flow_run_id = $1`, runs[7].ID).Scan(&transitions); err != nil || transitions != 7 {
		t.Errorf("state_transitions after the replay: %d, %v", transitions, err)
	}
	var uncommented int
	if err := b.pool.QueryRow(ctx, `
SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = 'public'::regnamespace AND c.relname IN ('flow_runs', 'task_runs', 'state_history') AND a.attnum > 0
  AND (col_description(c.oid, a.attnum) IS NULL OR obj_description(c.oid, 'pg_class') IS NULL)`).Scan(&uncommented); err != nil || uncommented != 0 {
		t.Errorf("%d columns lost their comments (%v)", uncommented, err)
	}
	var indexes int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' AND indexname IN ('flow_runs_pkey', 'flow_runs_scheduled_idx', 'state_history_flow_run_idx', 'task_run_attempts_running_idx')`).Scan(&indexes); err != nil || indexes != 4 {
		t.Errorf("%d of 4 indexes kept their names (%v)", indexes, err)
	}
	var canRead bool
	if err := b.pool.QueryRow(ctx, `SELECT has_table_privilege($1, 'public.flow_runs', 'SELECT')`, role).Scan(&canRead); err != nil || !canRead {
		t.Errorf("the reader role lost its privilege on flow_runs (%v)", err)
	}
	var schemas int
	_ = b.pool.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ordo_replay%'`).Scan(&schemas)
	if schemas != 0 {
		t.Errorf("%d replay schemas left behind", schemas)
	}
}
