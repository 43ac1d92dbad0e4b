package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/projections"
)

// Replay is scenario 5: a full replay of a log of synthetic runs, next to a
// plain sequential scan of the same events table read by a client (every
// column, nothing decoded), on the same database, both from memory.
type Replay struct {
	Events   int64
	Rate     float64 // events per second rebuilding every read model
	Took     time.Duration
	ScanRate float64 // events per second of the plain scan
	// The CPU time the replay took: ordo's (this process's) and
	// PostgreSQL's, when its processes are visible here (else 0).
	OrdoCPU, ServerCPU time.Duration
}

// MeasureReplay loads a log of at least events events into a new database
// and measures, rounds times over, a scan of it and a replay of it: each
// round's two figures are taken one right after the other, in alternating
// order and from the same warm cache, so that their ratio is fair on a
// machine whose speed changes from minute to minute.
func MeasureReplay(ctx context.Context, env Env, events, rounds int) ([]Replay, error) {
	pool, err := newPool(ctx, env)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	store := eventstore.New(pool, domain.NewRegistry())
	defer store.Close()
	gen := newLogGen()
	env.logf("loading %s events of synthetic runs", count(events))
	if err := gen.load(ctx, env, pool, events); err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, `VACUUM (ANALYZE) events`); err != nil {
		return nil, err
	}
	server := newServerCPU(ctx, pool)
	var out []Replay
	for round := 1; round <= rounds; round++ {
		of := fmt.Sprintf("round %d of %d", round, rounds)
		var (
			scan           float64
			res            projections.ReplayResult
			ordoCPU, pgCPU time.Duration
		)
		measureScan := func() (err error) {
			env.logf("%s: scanning the events table", of)
			scan, err = scanRate(ctx, pool)
			return err
		}
		measureReplay := func() (err error) {
			env.logf("%s: replaying %s events", of, count(gen.total))
			last := ""
			ordo0, pg0 := cpuTime(), server.used()
			defer func() { ordoCPU, pgCPU = cpuTime()-ordo0, server.used()-pg0 }()
			res, err = projections.Replay(ctx, pool, store, projections.ReplayOptions{Logger: quiet, Progress: func(p projections.ReplayProgress) {
				if p.Phase != last {
					env.logf("%s: replay: %s at %s", of, p.Phase, p.Elapsed.Round(time.Millisecond))
					last = p.Phase
				}
			}})
			if err == nil && res.Events != int64(gen.total) {
				err = fmt.Errorf("replayed %d events, the log has %d", res.Events, gen.total)
			}
			return err
		}
		// Scan first in odd rounds and replay first in even ones, each
		// right after a scan that brings the events into memory, so that
		// both read the same warm cache whatever the other left behind.
		steps := []func() error{measureScan, measureReplay}
		if round%2 == 0 {
			steps = []func() error{measureReplay, measureScan}
		}
		for _, step := range steps {
			if _, err := scanRate(ctx, pool); err != nil {
				return nil, err
			}
			if err := step(); err != nil {
				return nil, err
			}
		}
		out = append(out, Replay{Events: res.Events, Rate: res.Rate(), Took: res.Duration, ScanRate: scan, OrdoCPU: ordoCPU, ServerCPU: pgCPU})
	}
	return out, nil
}

func replayScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	rounds, err := MeasureReplay(ctx, env, opts.Sizes.ReplayEvents, opts.Sizes.Rounds)
	if err != nil {
		return nil, err
	}
	// The round of the median ratio is reported, with the range of all.
	slices.SortFunc(rounds, func(a, b Replay) int { return cmp.Compare(a.Rate/a.ScanRate, b.Rate/b.ScanRate) })
	r := rounds[len(rounds)/2]
	row := Row{
		What:     fmt.Sprintf("replay, %s events, every read model", count(r.Events)),
		Ordo:     fmt.Sprintf("%s events/s (%s)", count(r.Rate), r.Took.Round(100*time.Millisecond)),
		Baseline: "plain sequential scan of `events`: " + count(r.ScanRate) + " events/s",
		Ratio:    ratio(r.Rate / r.ScanRate),
		Target:   "≥ 0.25 of the scan",
		Checks:   []Check{atLeast("ratio", r.Rate/r.ScanRate, 0.25)},
		Metrics: map[string]float64{"events": float64(r.Events), "events_per_s": r.Rate, "seconds": r.Took.Seconds(), "scan_events_per_s": r.ScanRate,
			"ratio": r.Rate / r.ScanRate, "rounds": float64(len(rounds)),
			"ratio_min": rounds[0].Rate / rounds[0].ScanRate, "ratio_max": rounds[len(rounds)-1].Rate / rounds[len(rounds)-1].ScanRate},
	}
	if len(rounds) > 1 {
		row.Note = fmt.Sprintf("median of %d rounds, each a scan and a replay in alternating order; ratios %s to %s",
			len(rounds), fmt.Sprintf("%.2f", row.Metrics["ratio_min"]), fmt.Sprintf("%.2f", row.Metrics["ratio_max"]))
	}
	// Where the time goes: a replay keeps every core busy, so what it
	// costs is CPU, PostgreSQL's (reading the log, COPY, index builds)
	// and ordo's (decoding and folding).
	if r.ServerCPU > 0 {
		row.Metrics["ordo_cpu_s"], row.Metrics["server_cpu_s"] = r.OrdoCPU.Seconds(), r.ServerCPU.Seconds()
		if row.Note != "" {
			row.Note += "; "
		}
		row.Note += fmt.Sprintf("CPU time of that replay: PostgreSQL %.1f s, ordo %.1f s, on %d CPUs", r.ServerCPU.Seconds(), r.OrdoCPU.Seconds(), runtime.NumCPU())
	}
	return []Row{row}, nil
}

// scanRate reads every column of every event to the client, undecoded,
// and returns events per second.
func scanRate(ctx context.Context, pool *pgxpool.Pool) (float64, error) {
	start := time.Now()
	rows, err := pool.Query(ctx, `SELECT position, transaction_id, stream_id, stream_type, version, type, data, metadata, recorded_at FROM events`)
	if err != nil {
		return 0, err
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
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// logGen writes realistic runs of the five-task ML pipeline of the user
// story (completed, retried, cached, failed, cancelled and crashed)
// straight into the events table with COPY, as Ordo would have appended
// them.
type logGen struct {
	rows  [][]any
	at    time.Time
	runs  int
	total int // events written so far
}

func newLogGen() *logGen {
	return &logGen{at: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

var eventColumns = []string{"stream_id", "stream_type", "version", "type", "data", "metadata", "recorded_at"}

// load appends runs until the generator has written at least n events, in
// transactions of 50,000 events.
func (g *logGen) load(ctx context.Context, env Env, pool *pgxpool.Pool, n int) error {
	const batch = 50_000
	began, from := time.Now(), g.total
	nextReport := g.total + max(n/10, batch)
	for g.total < n {
		g.rows = g.rows[:0]
		for len(g.rows) < batch && g.total+len(g.rows) < n {
			g.run()
		}
		copied, err := pool.CopyFrom(ctx, pgx.Identifier{"events"}, eventColumns, pgx.CopyFromRows(g.rows))
		if err != nil {
			return fmt.Errorf("copy events: %w", err)
		}
		g.total += int(copied)
		if g.total >= nextReport && g.total < n {
			env.logf("%s of %s events loaded (%s events/s)", count(g.total), count(n), count(float64(g.total-from)/time.Since(began).Seconds()))
			nextReport += max(n/10, batch)
		}
	}
	return nil
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
	g.rows = append(g.rows, []any{stream, e.StreamType(), *version, e.EventType(), data, m, g.at})
}

// run appends one flow run and its task runs, its outcome chosen by its
// number: 60% complete, 15% retry load_data, 10% use the cache, 8% fail,
// 4% are cancelled, 3% crash.
func (g *logGen) run() {
	g.runs++
	k := g.runs % 100
	id := uuid.Must(uuid.NewV7())
	ids := map[string]uuid.UUID{}
	var tasks []uuid.UUID
	for _, t := range pipeline.Tasks {
		tid := uuid.Must(uuid.NewV7())
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
