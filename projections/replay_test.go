package projections

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestProjectionReplayRate fills the log with synthetic runs in bulk and
// times a rebuild of the read models from zero. ORDO_REPLAY_RUNS scales it
// (7 events per run; 143000 runs is a million events).
func TestProjectionReplayRate(t *testing.T) {
	if testing.Short() {
		t.Skip("bulk replay")
	}
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	runs := 5000
	if v, err := strconv.Atoi(os.Getenv("ORDO_REPLAY_RUNS")); err == nil {
		runs = v
	}
	_, err := b.pool.Exec(ctx, `
WITH r AS (
    SELECT i, gen_random_uuid() AS run, gen_random_uuid() AS task, gen_random_uuid() AS dep FROM generate_series(1, $1) i
), e AS (
    SELECT r.i, 1 AS k, r.run AS stream_id, 'flow_run' AS stream_type, 1 AS version, 'FlowRunCreated' AS type,
        jsonb_build_object('name', 'run-' || r.i, 'deployment_id', r.dep, 'deployment_name', 'bulk', 'deployment_version', 1,
            'work_queue', 'default', 'tags', jsonb_build_array('bulk'), 'parameters', jsonb_build_object('i', r.i),
            'flow', jsonb_build_object('name', 'f', 'tasks', jsonb_build_array(jsonb_build_object('name', 't', 'command', jsonb_build_array('true')))),
            'task_run_ids', jsonb_build_object('t', r.task), 'scheduled_at', '2026-01-01T00:00:00Z') AS data FROM r
    UNION ALL SELECT r.i, 2, r.task, 'task_run', 1, 'TaskRunCreated',
        jsonb_build_object('flow_run_id', r.run, 'task', jsonb_build_object('name', 't', 'command', jsonb_build_array('true'))) FROM r
    UNION ALL SELECT r.i, 3, r.run, 'flow_run', 2, 'FlowRunPending', '{}' FROM r
    UNION ALL SELECT r.i, 4, r.run, 'flow_run', 3, 'FlowRunStarted', '{}' FROM r
    UNION ALL SELECT r.i, 5, r.task, 'task_run', 2, 'TaskRunStarted', '{"attempt": 1, "worker": "w"}' FROM r
    UNION ALL SELECT r.i, 6, r.task, 'task_run', 3, 'TaskRunCompleted', '{"attempt": 1, "result": 1}' FROM r
    UNION ALL SELECT r.i, 7, r.run, 'flow_run', 4, 'FlowRunCompleted', '{"result": 1}' FROM r
)
INSERT INTO events (stream_id, stream_type, version, type, data, metadata)
SELECT stream_id, stream_type, version, type, data, '{"actor": "bulk"}' FROM e ORDER BY i, k`, runs)
	if err != nil {
		t.Fatal(err)
	}
	var scan time.Duration
	{
		start := time.Now()
		var n int
		if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT data FROM events ORDER BY transaction_id, position) e`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		scan = time.Since(start)
	}
	start := time.Now()
	n, err := Rebuild(ctx, b.pool, b.store)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if n != runs*7 {
		t.Fatalf("replayed %d events, want %d", n, runs*7)
	}
	var completed int
	_ = b.pool.QueryRow(ctx, `SELECT count(*) FROM flow_runs WHERE state_type = 'COMPLETED'`).Scan(&completed)
	if completed != runs {
		t.Fatalf("%d of %d runs completed after replay", completed, runs)
	}
	t.Logf("replayed %d events in %s: %.0f events/s (a plain ordered scan of the log took %s)", n, took, float64(n)/took.Seconds(), scan)
}
