package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// BenchmarkReplay fills the log with realistic runs of a five-task ML
// pipeline (completed, retried, cached, failed, cancelled and crashed),
// written straight into the events table with COPY, then measures, in the
// same run on the same database, a plain sequential scan of the events
// table read by a client (every column, nothing decoded) and a full Replay.
// It reports both rates and their ratio (the target is at least 0.25).
// ORDO_BENCH_EVENTS sets the log size (default 200000); ORDO_BENCH_DEBUG=1
// logs how long each index and each step took:
//
//	ORDO_BENCH_EVENTS=1000000 go test ./projections -run '^$' -bench BenchmarkReplay -benchtime 1x
func BenchmarkReplay(b *testing.B) {
	n := 200_000
	if v, err := strconv.Atoi(os.Getenv("ORDO_BENCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	ctx := context.Background()
	pool := pgtest.Pool(b)
	store := eventstore.New(pool, domain.NewRegistry())
	defer store.Close()
	events := generateLog(b, pool, n)
	if _, err := pool.Exec(ctx, `VACUUM (ANALYZE) events`); err != nil {
		b.Fatal(err)
	}
	scanRate(b, pool) // warm the cache: both measures read from memory
	b.ResetTimer()
	var replayed, scanned, ratio float64
	for range b.N {
		b.StopTimer()
		scan := scanRate(b, pool)
		b.StartTimer()
		last := ""
		var logger *slog.Logger
		if os.Getenv("ORDO_BENCH_DEBUG") != "" {
			logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		res, err := Replay(ctx, pool, store, ReplayOptions{Logger: logger, Progress: func(p ReplayProgress) {
			if p.Phase != last {
				b.Logf("%s at %s", p.Phase, p.Elapsed.Round(time.Millisecond))
				last = p.Phase
			}
		}})
		if err != nil {
			b.Fatal(err)
		}
		if res.Events != int64(events) {
			b.Fatalf("replayed %d events, the log has %d", res.Events, events)
		}
		rate := res.Rate()
		b.Logf("%d events: replay %s (%.0f events/s; load %s), plain scan %.0f events/s, ratio %.2f",
			events, res.Duration.Round(time.Millisecond), rate, res.Load.Round(time.Millisecond), scan, rate/scan)
		replayed, scanned, ratio = replayed+rate, scanned+scan, ratio+rate/scan
	}
	b.ReportMetric(replayed/float64(b.N), "events/s")
	b.ReportMetric(scanned/float64(b.N), "scan-events/s")
	b.ReportMetric(ratio/float64(b.N), "ratio")
}

// scanRate reads every column of every event to the client, undecoded,
// and returns events per second.
func scanRate(tb testing.TB, pool *pgxpool.Pool) float64 {
	tb.Helper()
	ctx := context.Background()
	start := time.Now()
	rows, err := pool.Query(ctx, `SELECT position, transaction_id, stream_id, stream_type, version, type, data, metadata, recorded_at FROM events`)
	if err != nil {
		tb.Fatal(err)
	}
	n, size := 0, 0
	for rows.Next() {
		for _, v := range rows.RawValues() {
			size += len(v)
		}
		n++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return float64(n) / time.Since(start).Seconds()
}

// generateLog appends runs until the log holds at least n events, with
// COPY, 50,000 events per transaction, and returns the number of events.
func generateLog(tb testing.TB, pool *pgxpool.Pool, n int) int {
	tb.Helper()
	ctx := context.Background()
	g := &logGen{at: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	total := 0
	for total < n {
		g.rows = g.rows[:0]
		for len(g.rows) < 50_000 && total+len(g.rows) < n {
			g.run()
		}
		conn, err := pool.Acquire(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		rows := g.rows
		copied, _, err := copyIn(ctx, conn.Conn().PgConn(), "events",
			[]string{"stream_id", "stream_type", "version", "type", "data", "metadata", "recorded_at"},
			sliceSource(rows, func(c *copyBuf, r *genEvent) error {
				c.row(7)
				c.uuid(r.stream)
				c.text(r.streamType)
				c.int8(r.version)
				c.text(r.typ)
				c.jsonb(r.data)
				c.jsonb(r.meta)
				c.timestamptz(r.at)
				return nil
			}), 0)
		conn.Release()
		if err != nil {
			tb.Fatal(err)
		}
		total += int(copied)
	}
	return total
}

type genEvent struct {
	stream     uuid.UUID
	streamType string
	version    int64
	typ        string
	data, meta []byte
	at         time.Time
}

type logGen struct {
	rows []genEvent
	at   time.Time
	runs int
}

// pipeline is the flow of the user story: load, preprocess (cached),
// split, train, evaluate, each after the one before.
var pipeline = domain.FlowSpec{Name: "ml-pipeline", Tasks: []domain.TaskSpec{
	{Name: "load_data", Command: []string{"python3", "examples/ml-pipeline/load_data.py"}, Retries: 3, RetryDelaySeconds: domain.RetryDelays{5}, TimeoutSeconds: 60},
	{Name: "preprocess", Command: []string{"python3", "examples/ml-pipeline/preprocess.py"}, DependsOn: []string{"load_data"}, Cache: &domain.CachePolicy{Key: "inputs", ExpirationSeconds: 3600}},
	{Name: "split", Command: []string{"python3", "examples/ml-pipeline/split.py"}, DependsOn: []string{"preprocess"}},
	{Name: "train", Command: []string{"python3", "examples/ml-pipeline/train.py"}, DependsOn: []string{"split"}, Tags: []string{"gpu"}},
	{Name: "evaluate", Command: []string{"python3", "examples/ml-pipeline/evaluate.py"}, DependsOn: []string{"train"}},
}}

var deploymentID = uuid.MustParse("0196a0f2-7c1e-7b6a-9d51-3f2a1c0e4b77")

func (g *logGen) emit(stream uuid.UUID, version *int64, e domain.Event, meta domain.Metadata) {
	data, err := json.Marshal(e)
	if err != nil {
		panic(err)
	}
	m, _ := json.Marshal(meta)
	*version++
	g.at = g.at.Add(1500 * time.Microsecond)
	g.rows = append(g.rows, genEvent{stream: stream, streamType: e.StreamType(), version: *version, typ: e.EventType(), data: data, meta: m, at: g.at})
}

// run appends one flow run and its task runs, its outcome chosen by its
// number: 60% complete, 15% retry load_data, 10% use the cache, 8% fail,
// 4% are cancelled, 3% crash.
func (g *logGen) run() {
	g.runs++
	k := g.runs % 100
	id := uuid.New()
	ids := map[string]uuid.UUID{}
	var tasks []uuid.UUID
	for _, t := range pipeline.Tasks {
		tid := uuid.New()
		ids[t.Name] = tid
		tasks = append(tasks, tid)
	}
	corr := domain.Metadata{Actor: "scheduler", CorrelationID: id.String()}
	worker := domain.Metadata{Actor: "worker:gpu-1"}
	var fv int64
	tv := make([]int64, len(tasks))
	g.emit(id, &fv, domain.FlowRunCreated{
		Name: fmt.Sprintf("model-training-%07d", g.runs), DeploymentID: deploymentID, DeploymentName: "model_training_validation",
		DeploymentVersion: 1, WorkQueue: "ml", Tags: []string{"prod"}, Parameters: map[string]any{"table": "houses", "test_size": 0.2},
		Flow: pipeline, TaskRunIDs: ids, ScheduledAt: g.at.Truncate(time.Second), AutoScheduled: true,
	}, corr)
	for i, t := range pipeline.Tasks {
		g.emit(tasks[i], &tv[i], domain.TaskRunCreated{FlowRunID: id, Task: t}, corr)
	}
	g.emit(id, &fv, domain.FlowRunPending{}, corr)
	started := false
	succeed := func(i int, attempt int, result any) {
		g.emit(tasks[i], &tv[i], domain.TaskRunStarted{Attempt: attempt, Worker: "gpu-1"}, worker)
		if !started {
			g.emit(id, &fv, domain.FlowRunStarted{}, corr)
			started = true
		}
		r, _ := json.Marshal(result)
		g.emit(tasks[i], &tv[i], domain.TaskRunCompleted{Attempt: attempt, Result: r}, worker)
	}
	notRun := func(from int) {
		for i := from; i < len(tasks); i++ {
			g.emit(tasks[i], &tv[i], domain.TaskRunCancelled{NotRun: true}, corr)
		}
	}
	exit := 1
	switch {
	case k >= 60 && k < 75: // load_data fails once, then succeeds
		g.emit(tasks[0], &tv[0], domain.TaskRunStarted{Attempt: 1, Worker: "gpu-1"}, worker)
		g.emit(id, &fv, domain.FlowRunStarted{}, corr)
		started = true
		g.emit(tasks[0], &tv[0], domain.TaskRunRetryScheduled{AttemptFailure: domain.AttemptFailure{
			Attempt: 1, Error: "could not connect to server: Connection refused", ExitCode: &exit, LogTail: []string{"psycopg2.OperationalError"},
		}, RetryAt: g.at.Add(5 * time.Second)}, worker)
		succeed(0, 2, map[string]any{"rows": 20640 + k})
	default:
		succeed(0, 1, map[string]any{"rows": 20640 + k})
	}
	if k >= 75 && k < 85 {
		g.emit(tasks[1], &tv[1], domain.TaskRunCached{Result: json.RawMessage(`{"path": "features.parquet"}`), CacheKey: "preprocess-3f2a", SourceTaskRunID: deploymentID}, corr)
	} else {
		succeed(1, 1, map[string]any{"path": "features.parquet"})
	}
	succeed(2, 1, map[string]any{"train": 16512, "validation": 4128})
	switch {
	case k >= 85 && k < 93: // train fails for good
		g.emit(tasks[3], &tv[3], domain.TaskRunStarted{Attempt: 1, Worker: "gpu-1"}, worker)
		g.emit(tasks[3], &tv[3], domain.TaskRunFailed{AttemptFailure: domain.AttemptFailure{Attempt: 1, Error: "exit status 1", ExitCode: &exit}}, worker)
		notRun(4)
		g.emit(id, &fv, domain.FlowRunFailed{Message: "task train failed: exit status 1"}, corr)
	case k >= 93 && k < 97: // cancelled while training
		g.emit(tasks[3], &tv[3], domain.TaskRunStarted{Attempt: 1, Worker: "gpu-1"}, worker)
		g.emit(id, &fv, domain.FlowRunCancelling{}, domain.Metadata{Actor: "token:alice", Reason: "wrong parameters"})
		g.emit(tasks[3], &tv[3], domain.TaskRunCancelled{}, worker)
		notRun(4)
		g.emit(id, &fv, domain.FlowRunCancelled{}, corr)
	case k >= 97: // the worker dies while training
		g.emit(tasks[3], &tv[3], domain.TaskRunStarted{Attempt: 1, Worker: "gpu-1"}, worker)
		g.emit(tasks[3], &tv[3], domain.TaskRunFailed{AttemptFailure: domain.AttemptFailure{Attempt: 1, Error: "worker gpu-1 stopped", Crashed: true}}, corr)
		notRun(4)
		g.emit(id, &fv, domain.FlowRunCrashed{Message: "task train crashed"}, corr)
	default:
		succeed(3, 1, map[string]any{"model": "/workspace/" + id.String() + "/model.pkl", "rmse": 0.4711})
		succeed(4, 1, map[string]any{"r2": 0.83})
		g.emit(id, &fv, domain.FlowRunCompleted{Result: json.RawMessage(`{"r2": 0.83}`)}, corr)
	}
}
