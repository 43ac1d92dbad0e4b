package projections

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// Schemas that Replay builds in and moves the old tables to.
const (
	replaySchema = "ordo_replay"
	oldSchema    = "ordo_replay_old"
)

// pgerrLockNotAvailable is lock_not_available: lock_timeout ran out.
const pgerrLockNotAvailable = "55P03"

// replayLockKey is the advisory lock that lets one replay run at a time
// ("ordorply").
const replayLockKey int64 = 0x6f72646f72706c79

// ReplayOptions tune Replay. The zero value is usable.
type ReplayOptions struct {
	// Progress, when set, is called every ProgressInterval while the log is
	// loaded, and once at the start of each later phase.
	Progress func(ReplayProgress)
	// ProgressInterval defaults to 1s.
	ProgressInterval time.Duration
	// Verify compares the rebuilt tables with the live ones, row by row,
	// once both hold the same prefix of the log, and checks every event of
	// the log with the domain's validator. The report is in the result.
	Verify bool
	// DryRun builds (and verifies) the new tables and then throws them away:
	// the live tables stay.
	DryRun bool
	// Decoders is how many goroutines decode events. Defaults to GOMAXPROCS.
	Decoders int
	// LockTimeout bounds the wait for the locks of the swap (readers of the
	// live tables finishing their queries). Defaults to 10s.
	LockTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (o *ReplayOptions) validate() error {
	if o.ProgressInterval < 0 || o.LockTimeout < 0 || o.Decoders < 0 {
		return errors.New("replay options: ProgressInterval, LockTimeout and Decoders must not be negative")
	}
	if o.ProgressInterval == 0 {
		o.ProgressInterval = time.Second
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = 10 * time.Second
	}
	if o.Decoders == 0 {
		o.Decoders = runtime.GOMAXPROCS(0)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Replay phases, in order.
const (
	PhaseLoad    = "load"     // reading and folding the log, writing state_history
	PhaseIndex   = "index"    // writing the other tables, building indexes
	PhaseCatchUp = "catch-up" // applying what was appended meanwhile
	PhaseVerify  = "verify"   // comparing with the live tables
	PhaseSwap    = "swap"     // putting the new tables in place
	PhaseDone    = "done"
)

// ReplayProgress says how far a replay is.
type ReplayProgress struct {
	Phase     string
	Events    int64         // events applied so far
	Total     int64         // events in the log when the replay started (0 until counted)
	Elapsed   time.Duration // since the replay started
	Rate      float64       // events per second while loading
	Remaining time.Duration // estimated time left to load the log; 0 when unknown
}

func (p ReplayProgress) String() string {
	s := fmt.Sprintf("%s: %d", p.Phase, p.Events)
	if p.Total > 0 {
		s += fmt.Sprintf("/%d events (%.0f%%)", p.Total, 100*float64(p.Events)/float64(p.Total))
	} else {
		s += " events"
	}
	// No rate here: the summary at the end gives the one figure, over the
	// whole replay.
	s += fmt.Sprintf(", %s elapsed", p.Elapsed.Round(100*time.Millisecond))
	if p.Remaining > 0 {
		s += fmt.Sprintf(", about %s left", p.Remaining.Round(100*time.Millisecond))
	}
	return s
}

// ReplayResult says what a replay did.
type ReplayResult struct {
	Events     int64                 // events applied to the new tables
	Checkpoint eventstore.Checkpoint // where the new tables (and the checkpoint) stand
	Duration   time.Duration         // the whole replay
	Load       time.Duration         // reading and folding the log and writing state_history, before indexes and the other tables
	Swapped    bool                  // the new tables are live (false on a dry run)
	Verify     *VerifyReport         // set when ReplayOptions.Verify
}

// Rate is the replay rate, events per second, over the whole replay.
func (r ReplayResult) Rate() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Events) / r.Duration.Seconds()
}

// replayGCPercent is the garbage collector's target while Replay runs.
const replayGCPercent = 400

// Replay rebuilds every read model from the start of the log into fresh
// tables, while the live tables go on serving and the projector goes on
// applying new events to them; then, in one transaction, it applies the
// last events, puts the new tables in place of the old ones (views that
// use them follow), moves the checkpoint and drops the old tables.
//
// Loading does not go through the projector's batches: it folds each
// stream in memory with the domain's Apply and writes each final row once,
// with binary COPY into tables without indexes, which are built afterwards.
// It raises the process's garbage collection target (GOGC) to 400 while it
// runs, unless it was set higher.
func Replay(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store, opts ReplayOptions) (ReplayResult, error) {
	if err := opts.validate(); err != nil {
		return ReplayResult{}, err
	}
	lock, err := pool.Acquire(ctx)
	if err != nil {
		return ReplayResult{}, fmt.Errorf("replay: %w", err)
	}
	defer lock.Release()
	var locked bool
	if err := lock.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, replayLockKey).Scan(&locked); err != nil {
		return ReplayResult{}, fmt.Errorf("replay: take lock: %w", err)
	}
	if !locked {
		return ReplayResult{}, domain.Errorf(domain.CodeConflict, "another replay is running on this database")
	}
	defer func() {
		_, _ = lock.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, replayLockKey)
	}()

	// Loading allocates a stream of short-lived events and rows; with the
	// default target the collector took a third of the process's CPU. The
	// heap a replay keeps is the final rows, so a higher target costs little.
	if gc := debug.SetGCPercent(replayGCPercent); gc > replayGCPercent || gc < 0 {
		debug.SetGCPercent(gc)
	} else {
		defer debug.SetGCPercent(gc)
	}

	r := &replayer{pool: pool, store: store, opts: opts, start: time.Now()}
	if opts.Verify {
		r.validator = domain.NewLogValidator(store.Registry())
		r.report = &VerifyReport{}
	}
	res, err := r.run(ctx)
	if !res.Swapped {
		if _, e := pool.Exec(context.WithoutCancel(ctx), `DROP SCHEMA IF EXISTS `+replaySchema+` CASCADE`); e != nil {
			opts.Logger.Warn("replay: drop the unused new tables", "err", e)
		}
	}
	return res, err
}

// Verify rebuilds the read models aside, compares them with the live ones
// and validates the log, without changing anything: Replay with Verify and
// DryRun.
func Verify(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store, opts ReplayOptions) (VerifyReport, error) {
	opts.Verify, opts.DryRun = true, true
	res, err := Replay(ctx, pool, store, opts)
	if err != nil {
		return VerifyReport{}, err
	}
	return *res.Verify, nil
}

type replayer struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
	opts  ReplayOptions
	start time.Time

	events    atomic.Int64
	total     atomic.Int64
	loadTime  time.Duration
	phase     atomic.Value // string
	validator *domain.LogValidator
	report    *VerifyReport
}

func (r *replayer) progress() ReplayProgress {
	p := ReplayProgress{Events: r.events.Load(), Total: r.total.Load(), Elapsed: time.Since(r.start)}
	p.Phase, _ = r.phase.Load().(string)
	load := p.Elapsed
	if r.loadTime > 0 {
		load = r.loadTime
	}
	if load > 0 {
		p.Rate = float64(p.Events) / load.Seconds()
	}
	if p.Phase == PhaseLoad && p.Rate > 0 && p.Total > p.Events {
		p.Remaining = time.Duration(float64(p.Total-p.Events) / p.Rate * float64(time.Second))
	}
	return p
}

func (r *replayer) enter(phase string) {
	r.phase.Store(phase)
	if r.opts.Progress != nil {
		r.opts.Progress(r.progress())
	}
}

func (r *replayer) run(ctx context.Context) (ReplayResult, error) {
	res := ReplayResult{}
	r.enter(PhaseLoad)
	if err := r.prepare(ctx); err != nil {
		return res, err
	}
	stop := r.reportProgress()
	from, b, err := r.load(ctx)
	stop()
	if err != nil {
		return res, err
	}
	r.loadTime = time.Since(r.start)
	res.Load = r.loadTime

	// state_history is complete: its indexes are built while the final rows
	// of the other tables are written, and each of those tables gets its
	// indexes as soon as its rows are in.
	r.enter(PhaseIndex)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.index(gctx, "state_history") })
	g.Go(func() error { return r.writeFinal(gctx, b) })
	if err := g.Wait(); err != nil {
		return res, err
	}
	r.opts.Logger.Debug("replay: final rows written and indexed", "flow_runs", len(b.flowOrder), "task_runs", len(b.taskOrder), "elapsed", time.Since(r.start))

	r.enter(PhaseCatchUp)
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("replay: %w", err)
	}
	// The connection's search path sends the projector's statements to the
	// new tables; it is closed afterwards rather than returned to the pool.
	defer func() {
		c := conn.Hijack()
		_ = c.Close(context.WithoutCancel(ctx))
	}()
	if _, err := conn.Exec(ctx, `SET search_path TO `+replaySchema+`, public`); err != nil {
		return res, fmt.Errorf("replay: %w", err)
	}
	for {
		next, n, err := r.catchUpOn(ctx, conn, from, nil, 10000, r.count)
		if err != nil {
			return res, err
		}
		from = next
		if n < 10000 {
			break
		}
	}
	var swapped bool
	var at eventstore.Checkpoint
	for attempt := 1; ; attempt++ {
		swapped, at, err = r.swap(ctx, conn, from)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == pgerrLockNotAvailable && attempt < 5 {
			r.opts.Logger.Warn("replay: the live tables stayed busy; trying the swap again", "attempt", attempt, "err", err)
			continue
		}
		if err != nil {
			return res, err
		}
		break
	}
	res.Swapped, res.Checkpoint = swapped, at
	res.Events = r.events.Load()
	res.Duration = time.Since(r.start)
	if r.report != nil {
		r.report.Events = r.events.Load()
		r.report.Checkpoint = at.String()
		r.report.Position, r.report.TransactionID = at.Position, at.TransactionID
		r.report.Clean = len(r.report.Violations) == 0 && r.report.differences() == 0
		res.Verify = r.report
	}
	r.enter(PhaseDone)
	return res, nil
}

// reportProgress calls the Progress option every ProgressInterval until the
// returned function is called.
func (r *replayer) reportProgress() func() {
	if r.opts.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(r.opts.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				r.opts.Progress(r.progress())
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

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

const chunkSize = 4096

// chunk is a run of events, read in order, decoded by any decoder.
type chunk struct {
	envs  []domain.Envelope
	metas [][]byte // each event's metadata document, decoded into envs by the decoder
	err   error
	ready chan struct{}
}

// load reads the log, folds it and writes state_history as it goes; it
// returns the checkpoint of the last event it read and the folded rows.
func (r *replayer) load(ctx context.Context) (eventstore.Checkpoint, *batch, error) {
	g, ctx := errgroup.WithContext(ctx)
	var last eventstore.Checkpoint

	g.Go(func() error { // the total, for the estimate of time left: positions, from the index
		if n, err := r.store.PositionSpan(ctx, r.pool); err == nil {
			r.total.Store(n)
		}
		return nil
	})

	work := make(chan *chunk, 2*r.opts.Decoders)
	ordered := make(chan *chunk, 4*r.opts.Decoders)
	g.Go(func() error { // read
		defer close(work)
		defer close(ordered)
		return r.read(ctx, work, ordered)
	})
	for range r.opts.Decoders {
		g.Go(func() error { // decode
			d := newDecoder(r.store.Registry())
			for c := range work {
				c.err = d.decode(c.envs, c.metas)
				close(c.ready)
			}
			return nil
		})
	}

	history := make(chan []historyRow, 8)
	b := newBatch()
	g.Go(func() error { // fold
		defer close(history)
		for {
			c, ok := <-ordered
			if !ok {
				break
			}
			select {
			case <-c.ready:
			case <-ctx.Done():
				return ctx.Err()
			}

			if c.err != nil {
				return c.err
			}
			if err := b.fold(c.envs); err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			r.validate(c.envs)
			if len(b.history) > 0 {
				select {
				case history <- b.history:
				case <-ctx.Done():
					return ctx.Err()
				}
				b.history = make([]historyRow, 0, len(b.history))
			}
			last = eventstore.CheckpointOf(c.envs[len(c.envs)-1])
			r.events.Add(int64(len(c.envs)))
		}
		return nil
	})
	g.Go(func() error { // write state_history as it comes
		var rows []historyRow
		src := func(c *copyBuf) (int, error) {
			for len(rows) == 0 {
				var ok bool
				select {
				case rows, ok = <-history:
					if !ok {
						return 0, nil
					}
				case <-ctx.Done():
					return 0, ctx.Err()
				}
			}
			n := min(len(rows), 1000)
			for i := range n {
				_ = rows[i].encode(c)
			}
			rows = rows[n:]
			return n, nil
		}
		return r.copy(ctx, "state_history", historyCopyColumns, src)
	})
	if err := g.Wait(); err != nil {
		return last, nil, err
	}
	r.opts.Logger.Debug("replay: log read and folded", "events", r.events.Load(), "elapsed", time.Since(r.start))
	return last, b, nil
}

// read streams the log into chunks, handing each to a decoder and, in
// order, to the folder.
func (r *replayer) read(ctx context.Context, work, ordered chan<- *chunk) error {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer conn.Release()
	rows, err := r.store.LogRows(ctx, conn)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer rows.Close()
	// Fixed-width columns must come in binary; text and jsonb may come
	// either way (jsonb in binary is a version byte and then its text).
	fds := rows.FieldDescriptions()
	binaryRows := len(fds) == 9
	for _, i := range []int{0, 1, 2, 4, 8} {
		if binaryRows && fds[i].Format != pgx.BinaryFormatCode {
			binaryRows = false
		}
	}
	jsonSkip := func(i int) int {
		if binaryRows && fds[i].Format == pgx.BinaryFormatCode {
			return 1
		}
		return 0
	}
	dataSkip, metaSkip := jsonSkip(6), jsonSkip(7)
	names := map[string]string{} // stream and event type names, shared
	intern := func(b []byte) string {
		if s, ok := names[string(b)]; ok {
			return s
		}
		s := string(b)
		names[s] = s
		return s
	}
	send := func(c *chunk) error {
		select {
		case work <- c:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case ordered <- c:
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}
	newChunk := func() *chunk {
		return &chunk{envs: make([]domain.Envelope, 0, chunkSize), metas: make([][]byte, 0, chunkSize), ready: make(chan struct{})}
	}
	c := newChunk()
	var arena []byte
	for rows.Next() {
		var e domain.Envelope
		if binaryRows {
			v := rows.RawValues()
			if len(v[0]) != 8 || len(v[1]) != 8 || len(v[2]) != 16 || len(v[4]) != 8 || len(v[6]) < dataSkip || len(v[7]) < metaSkip || len(v[8]) != 8 {
				return errors.New("replay: unexpected binary row layout")
			}
			e.Position = int64(binary.BigEndian.Uint64(v[0]))
			e.TransactionID = binary.BigEndian.Uint64(v[1])
			copy(e.StreamID[:], v[2])
			e.StreamType = intern(v[3])
			e.Version = int64(binary.BigEndian.Uint64(v[4]))
			e.Type = intern(v[5])
			data, meta := v[6][dataSkip:], v[7][metaSkip:]
			if cap(arena)-len(arena) < len(data)+len(meta) {
				arena = make([]byte, 0, max(1<<20, len(data)+len(meta)))
			}
			n := len(arena)
			arena = append(arena, data...)
			arena = append(arena, meta...)
			e.Data = arena[n : n+len(data) : n+len(data)]
			c.metas = append(c.metas, arena[n+len(data):len(arena):len(arena)])
			e.RecordedAt = time.UnixMicro(int64(binary.BigEndian.Uint64(v[8])) + pgEpochMicros)
		} else {
			var txid int64
			var meta []byte
			if err := rows.Scan(&e.Position, &txid, &e.StreamID, &e.StreamType, &e.Version, &e.Type, (*[]byte)(&e.Data), &meta, &e.RecordedAt); err != nil {
				return fmt.Errorf("replay: scan event: %w", err)
			}
			e.TransactionID = uint64(txid)
			c.metas = append(c.metas, meta)
		}
		c.envs = append(c.envs, e)
		if len(c.envs) == chunkSize {
			if err := send(c); err != nil {
				return err
			}
			c = newChunk()
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("replay: read log: %w", err)
	}
	if len(c.envs) > 0 {
		return send(c)
	}
	return nil
}

// decoder decodes events, remembering small payloads and metadata it has
// seen: a log repeats them a lot ({"attempt": 1, "worker": "w1"}).
type decoder struct {
	reg    *domain.Registry
	events map[string]domain.Event
	metas  map[string]domain.Metadata
	tasks  map[string]domain.TaskSpec
	flows  map[string]domain.FlowSpec
}

const decodeCacheMax = 1 << 14

func newDecoder(reg *domain.Registry) *decoder {
	return &decoder{reg: reg, events: map[string]domain.Event{}, metas: map[string]domain.Metadata{}, tasks: map[string]domain.TaskSpec{}, flows: map[string]domain.FlowSpec{}}
}

func (d *decoder) decode(envs []domain.Envelope, metas [][]byte) error {
	var key []byte
	for i := range envs {
		e := &envs[i]
		raw := metas[i]
		m, ok := d.metas[string(raw)]
		if !ok {
			if err := json.Unmarshal(raw, &m); err != nil {
				return fmt.Errorf("replay: event %d: decode metadata: %w", e.Position, err)
			}
			if len(d.metas) >= decodeCacheMax {
				clear(d.metas)
			}
			d.metas[string(raw)] = m
		}
		e.Metadata = m
		if d.creation(e) {
			continue
		}
		if len(e.Data) <= 96 {
			key = append(append(append(key[:0], e.Type...), 0), e.Data...)
			if ev, ok := d.events[string(key)]; ok && ev.StreamType() == e.StreamType {
				e.Event = ev
				continue
			}
		}
		if err := d.reg.DecodeEnvelope(e); err != nil {
			return fmt.Errorf("replay: event %d: %w", e.Position, err)
		}
		if len(e.Data) <= 96 {
			if len(d.events) >= decodeCacheMax {
				clear(d.events)
			}
			d.events[string(key)] = e.Event
		}
	}
	return nil
}

var (
	taskRunCreated = domain.TaskRunCreated{}.EventType()
	flowRunCreated = domain.FlowRunCreated{}.EventType()
)

// creation decodes the two big events of every run, TaskRunCreated and
// FlowRunCreated, decoding their task or flow spec, which the runs of a
// deployment share, once per distinct spec. It reports false, leaving e
// alone, when the payload does not have the expected shape.
func (d *decoder) creation(e *domain.Envelope) bool {
	switch {
	case e.Type == taskRunCreated && e.StreamType == domain.StreamTaskRun:
		raw, rest, ok := domain.SplitLeading(e.Data, "task")
		if !ok {
			return false
		}
		var ev domain.TaskRunCreated
		if id, ok := flowRunIDOnly(rest); ok {
			ev.FlowRunID = id
		} else if json.Unmarshal(rest, &ev) != nil {
			return false
		}
		task, ok := d.tasks[string(raw)]
		if !ok {
			if json.Unmarshal(raw, &task) != nil {
				return false
			}
			if len(d.tasks) >= decodeCacheMax {
				clear(d.tasks)
			}
			d.tasks[string(raw)] = task
		}
		ev.Task = task
		e.Event = ev
		return true
	case e.Type == flowRunCreated && e.StreamType == domain.StreamFlowRun:
		raw, rest, ok := domain.SplitLeading(e.Data, "flow")
		if !ok {
			return false
		}
		var ev domain.FlowRunCreated
		if json.Unmarshal(rest, &ev) != nil {
			return false
		}
		flow, ok := d.flows[string(raw)]
		if !ok {
			if json.Unmarshal(raw, &flow) != nil {
				return false
			}
			if len(d.flows) >= decodeCacheMax {
				clear(d.flows)
			}
			d.flows[string(raw)] = flow
		}
		ev.Flow = flow
		e.Event = ev
		return true
	}
	return false
}

// flowRunIDOnly reads the rest of a TaskRunCreated as jsonb prints it,
// {"flow_run_id": "<uuid>"}, without the cost of a JSON decoder; it reports
// false for any other shape.
func flowRunIDOnly(rest []byte) (uuid.UUID, bool) {
	const prefix, suffix = `{"flow_run_id": "`, `"}`
	if len(rest) != len(prefix)+36+len(suffix) || string(rest[:len(prefix)]) != prefix || string(rest[len(rest)-len(suffix):]) != suffix {
		return uuid.Nil, false
	}
	id, err := uuid.ParseBytes(rest[len(prefix) : len(prefix)+36])
	return id, err == nil
}

// count adds applied events to the progress and, when verifying, checks
// them with the log validator.
func (r *replayer) count(envs []domain.Envelope) {
	r.validate(envs)
	r.events.Add(int64(len(envs)))
}

// validate checks events with the log validator, when verifying.
func (r *replayer) validate(envs []domain.Envelope) {
	if r.validator == nil {
		return
	}
	for i := range envs {
		if err := r.validator.Check(envs[i]); err != nil {
			r.report.addViolation(err)
		}
	}
}

// copyChunkRows bounds the rows of one COPY transaction. Every transaction
// that writes holds back the gap-free readers of the log (the live
// projector among them) until it ends: short ones keep the read models
// serving fresh data during a replay.
const copyChunkRows = 20_000

// copy writes the rows of src into a new table on a connection of its own,
// with COPY, in transactions of at most copyChunkRows rows.
func (r *replayer) copy(ctx context.Context, table string, columns []string, src copySource) error {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer conn.Release()
	for {
		_, exhausted, err := copyIn(ctx, conn.Conn().PgConn(), replaySchema+"."+table, columns, src, copyChunkRows)
		if err != nil || exhausted {
			return err
		}
	}
}

// taskRunCopies is how many COPYs write task_runs at once: its rows are
// the most of the final ones by far, and one COPY of them kept one
// PostgreSQL process busy for seconds while the other core had little left
// to do.
const taskRunCopies = 2

// writeFinal writes the last state of every deployment, flow run, task run
// and attempt, the tables at the same time, and builds each table's indexes
// once its rows are in.
func (r *replayer) writeFinal(ctx context.Context, b *batch) error {
	g, ctx := errgroup.WithContext(ctx)
	// written copies a table's rows by the COPYs given, at once, then
	// builds the table's indexes.
	written := func(table string, copies ...func(context.Context) error) {
		g.Go(func() error {
			cg, cctx := errgroup.WithContext(ctx)
			for _, c := range copies {
				cg.Go(func() error { return c(cctx) })
			}
			if err := cg.Wait(); err != nil {
				return err
			}
			return r.index(ctx, table)
		})
	}

	flows := make([]*flowRunRow, 0, len(b.flowOrder))
	for _, id := range b.flowOrder {
		flows = append(flows, b.flows[id])
	}
	written("flow_runs", func(ctx context.Context) error {
		return r.copy(ctx, "flow_runs", flowRunCopyColumns, sliceSource(flows, func(c *copyBuf, row **flowRunRow) error {
			out := flowRunOutOf(*row)
			return out.encode(c)
		}))
	})

	tasks := make([]*taskRunRow, 0, len(b.taskOrder))
	for _, id := range b.taskOrder {
		tasks = append(tasks, b.tasks[id])
	}
	var taskCopies []func(context.Context) error
	for part := range taskRunCopies {
		rows := tasks[part*len(tasks)/taskRunCopies : (part+1)*len(tasks)/taskRunCopies]
		taskCopies = append(taskCopies, func(ctx context.Context) error {
			// Task runs created from one decoded spec share its slices (see
			// decoder.creation): the spec is encoded once per shared Command.
			encoded := map[*string][]byte{}
			return r.copy(ctx, "task_runs", taskRunCopyColumns, sliceSource(rows, func(c *copyBuf, row **taskRunRow) error {
				out := taskRunOutOf(*row)
				var key *string
				if cmd := out.Task.Command; len(cmd) > 0 {
					key = &cmd[0]
				}
				task, ok := encoded[key]
				if !ok || key == nil {
					var err error
					if task, err = json.Marshal(out.Task); err != nil {
						return fmt.Errorf("task run %s: encode task: %w", out.ID, err)
					}
					if key != nil {
						encoded[key] = task
					}
				}
				out.encode(c, task)
				return nil
			}))
		})
	}
	written("task_runs", taskCopies...)

	attempts := make([]*attemptRow, 0, len(b.attemptKeys))
	for _, k := range b.attemptKeys {
		attempts = append(attempts, b.attempts[k])
	}
	written("task_run_attempts", func(ctx context.Context) error {
		return r.copy(ctx, "task_run_attempts", attemptCopyColumns, sliceSource(attempts, func(c *copyBuf, a **attemptRow) error {
			return (*a).encode(c)
		}))
	})

	var deploys []*deploymentRow
	for _, id := range b.deployOrder {
		if row := b.deploys[id]; !row.deleted {
			deploys = append(deploys, row)
		}
	}
	written("deployments", func(ctx context.Context) error {
		return r.copy(ctx, "deployments", deploymentCopyColumns, sliceSource(deploys, func(c *copyBuf, row **deploymentRow) error {
			return encodeDeployment(c, (*row).d)
		}))
	})
	return g.Wait()
}

var deploymentCopyColumns = []string{"id", "name", "version", "description", "work_queue", "tags", "parameters", "schedule",
	"paused", "flow", "spec", "created_at", "updated_at", "stream_version"}

func encodeDeployment(c *copyBuf, d domain.Deployment) error {
	s := d.Spec
	params, err1 := json.Marshal(nonNilMap(s.Parameters))
	flow, err2 := json.Marshal(s.Flow)
	spec, err3 := json.Marshal(s)
	var schedule []byte
	var err4 error
	if s.Schedule != nil {
		schedule, err4 = json.Marshal(s.Schedule)
	}
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return fmt.Errorf("deployment %s: encode: %w", d.ID, err)
	}
	c.row(14)
	c.uuid(d.ID)
	c.text(s.Name)
	c.int4(d.Version)
	c.text(s.Description)
	c.text(s.WorkQueue)
	c.textArray(s.Tags)
	c.jsonb(params)
	c.jsonb(schedule)
	c.bool(d.Paused)
	c.jsonb(flow)
	c.jsonb(spec)
	c.timestamptz(d.CreatedAt)
	c.timestamptz(d.UpdatedAt)
	c.int8(d.Stream)
	return nil
}

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

// txBeginner is a connection or a transaction: where a batch runs.
type txBeginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// catchUpOn applies, with the projector's batches, up to limit events after
// from (and not past upTo, when set) to the tables the search path names, in
// a transaction (or savepoint) of on. It returns the new checkpoint and how
// many events it applied, after handing them to applied (when set).
func (r *replayer) catchUpOn(ctx context.Context, on txBeginner, from eventstore.Checkpoint, upTo *eventstore.Checkpoint, limit int, applied func([]domain.Envelope)) (eventstore.Checkpoint, int, error) {
	tx, err := on.Begin(ctx)
	if err != nil {
		return from, 0, fmt.Errorf("replay: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	envs, err := r.store.ReadAll(ctx, tx, from, limit)
	if err != nil {
		return from, 0, err
	}
	if upTo != nil {
		n := 0
		for n < len(envs) && !upTo.Less(eventstore.CheckpointOf(envs[n])) {
			n++
		}
		envs = envs[:n]
	}
	if len(envs) == 0 {
		return from, 0, nil
	}
	b := newBatch()
	if err := b.load(ctx, tx, envs); err != nil {
		return from, 0, err
	}
	if err := b.fold(envs); err != nil {
		return from, 0, err
	}
	if err := b.write(ctx, tx); err != nil {
		return from, 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return from, 0, fmt.Errorf("replay: %w", err)
	}
	if applied != nil {
		applied(envs)
	}
	return eventstore.CheckpointOf(envs[len(envs)-1]), len(envs), nil
}

// swap applies the last events to the new tables and, unless this is a dry
// run, puts them in place, all in one transaction that holds the
// checkpoint's lock (no projector applies anything meanwhile) and, for the
// swap itself, the live tables' exclusive locks.
func (r *replayer) swap(ctx context.Context, conn *pgxpool.Conn, from eventstore.Checkpoint) (bool, eventstore.Checkpoint, error) {
	var pending []domain.Envelope // applied in this transaction: counted once it is done
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, from, fmt.Errorf("replay: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = `+quoteLiteral(strconv.FormatInt(r.opts.LockTimeout.Milliseconds(), 10)+"ms")); err != nil {
		return false, from, fmt.Errorf("replay: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING`, ReadModels); err != nil {
		return false, from, fmt.Errorf("replay: %w", err)
	}
	var txid string
	var pos int64
	if err := tx.QueryRow(ctx, `SELECT transaction_id::text, position FROM projection_checkpoints WHERE name = $1 FOR UPDATE`, ReadModels).Scan(&txid, &pos); err != nil {
		return false, from, fmt.Errorf("replay: lock checkpoint: %w", err)
	}
	live, err := eventstore.ParseCheckpoint(txid + "-" + strconv.FormatInt(pos, 10))
	if err != nil {
		return false, from, err
	}
	// The target: the end of the log readable now. Whatever becomes readable
	// later sorts after it.
	head, ok, err := r.store.StableHead(ctx, tx)
	if err != nil {
		return false, from, fmt.Errorf("replay: %w", err)
	}
	if !ok {
		head = from
	}
	// The live tables only hold readable events, so the readable head is
	// at or past their checkpoint, unless ordo prune removed the events
	// they were applied from last and the record of that is not readable
	// yet: then every event that is left up to the checkpoint is readable
	// and none lies between the head and the checkpoint.
	pruned := head.Less(live)
	if pruned {
		head = live
	}
	for from.Less(head) {
		next, n, err := r.catchUpOn(ctx, tx, from, &head, 10000, func(envs []domain.Envelope) { pending = append(pending, envs...) })
		if err != nil {
			return false, from, err
		}
		if n == 0 && pruned {
			from = head
			break
		}
		if n == 0 {
			return false, from, fmt.Errorf("replay: the log between %s and %s could not be read", from, head)
		}
		from = next
	}
	if _, err := tx.Exec(ctx, `SET LOCAL search_path TO public`); err != nil {
		return false, from, fmt.Errorf("replay: %w", err)
	}
	if r.report != nil {
		r.enter(PhaseVerify)
		for live.Less(head) { // bring the live tables to the same point
			next, n, err := r.catchUpOn(ctx, tx, live, &head, 10000, nil)
			if err != nil {
				return false, from, err
			}
			if n == 0 {
				return false, from, fmt.Errorf("replay: the log between %s and %s could not be read", live, head)
			}
			live = next
		}
		if err := r.compare(ctx, tx); err != nil {
			return false, from, err
		}
	}
	if r.opts.DryRun {
		r.count(pending)
		return false, from, nil
	}

	r.enter(PhaseSwap)
	if _, err := tx.Exec(ctx, `LOCK TABLE `+joinIdents(readModelTables)+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		return false, from, fmt.Errorf("replay: lock the live tables: %w", err)
	}
	views, err := dependentViews(ctx, tx)
	if err != nil {
		return false, from, err
	}
	stmts := []string{`CREATE SCHEMA ` + oldSchema}
	for _, t := range readModelTables {
		stmts = append(stmts, `ALTER TABLE public.`+t+` SET SCHEMA `+oldSchema, `ALTER TABLE `+replaySchema+`.`+t+` SET SCHEMA public`)
	}
	for _, v := range views {
		stmts = append(stmts, `CREATE OR REPLACE VIEW `+v.name+` AS `+v.def)
	}
	for _, t := range readModelTables {
		stmts = append(stmts, `DROP TABLE `+oldSchema+`.`+t) // no CASCADE: anything still using them stops the swap
	}
	stmts = append(stmts, `DROP SCHEMA `+oldSchema, `DROP SCHEMA `+replaySchema)
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return false, from, fmt.Errorf("replay: swap: %s: %w", s, err)
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE projection_checkpoints SET transaction_id = $2::text::xid8, position = $3, updated_at = now() WHERE name = $1`,
		ReadModels, strconv.FormatUint(from.TransactionID, 10), from.Position); err != nil {
		return false, from, fmt.Errorf("replay: move checkpoint: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, from, fmt.Errorf("replay: swap: %w", err)
	}
	r.count(pending)
	return true, from, nil
}

type view struct{ name, def string }

// dependentViews returns the views that read the live tables, with their
// definitions as written against the public schema.
func dependentViews(ctx context.Context, tx pgx.Tx) ([]view, error) {
	rows, err := tx.Query(ctx, `
SELECT DISTINCT v.oid::regclass::text, pg_get_viewdef(v.oid), v.oid
FROM pg_depend d
JOIN pg_rewrite w ON w.oid = d.objid
JOIN pg_class v ON v.oid = w.ev_class
WHERE d.classid = 'pg_rewrite'::regclass
  AND d.refclassid = 'pg_class'::regclass
  AND d.refobjid = ANY (SELECT ('public.' || t)::regclass FROM unnest($1::text[]) t)
  AND v.oid <> d.refobjid AND v.relkind = 'v'
ORDER BY v.oid`, readModelTables)
	if err != nil {
		return nil, fmt.Errorf("replay: find views: %w", err)
	}
	defer rows.Close()
	var out []view
	for rows.Next() {
		var v view
		var oid uint32
		if err := rows.Scan(&v.name, &v.def, &oid); err != nil {
			return nil, fmt.Errorf("replay: find views: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
