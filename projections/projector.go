package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// ReadModels is the checkpoint name of the projector that fills the read
// model tables.
const ReadModels = "read_models"

// errCheckpointMoved says that the stored checkpoint is not where this
// projector left it: another projector (a second server, or Rebuild) moved
// it. The projector starts again from the stored one.
var errCheckpointMoved = errors.New("projection checkpoint moved by another projector")

// errHistoryChanged says that the events of a batch were read in a database
// history that is no longer current (a failover lost commits): the batch
// may hold events the log no longer has, and miss others. The projector
// reads again from its stored checkpoint, as when the checkpoint moved.
var errHistoryChanged = fmt.Errorf("%w: the database's history changed (a failover)", errCheckpointMoved)

// ProjectorOptions tune a Projector. The zero value is usable.
type ProjectorOptions struct {
	// BatchSize is the most events applied in one transaction. Defaults to 2000.
	BatchSize int
	// PollInterval bounds how long new events wait when no notification
	// arrives. Defaults to 200ms.
	PollInterval time.Duration
	// RetryDelay is the wait after a failed batch before Run tries again.
	// Defaults to 1s.
	RetryDelay time.Duration
	// Registerer receives the projector's metrics and the read models'
	// gauges (runs by state, queue depth, workers online), which are read
	// from the database when scraped. Nil registers none.
	Registerer prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	// beforeCommit, for tests, runs inside each batch's transaction just
	// before it commits.
	beforeCommit func(ctx context.Context, envs []domain.Envelope)
}

func (o *ProjectorOptions) validate() error {
	if o.BatchSize < 0 {
		return fmt.Errorf("projector options: BatchSize must not be negative, got %d", o.BatchSize)
	}
	if o.BatchSize == 0 {
		o.BatchSize = 2000
	}
	if o.PollInterval < 0 || o.RetryDelay < 0 {
		return errors.New("projector options: PollInterval and RetryDelay must not be negative")
	}
	if o.PollInterval == 0 {
		o.PollInterval = 200 * time.Millisecond
	}
	if o.RetryDelay == 0 {
		o.RetryDelay = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Projector tails the event log and applies it to the read model tables.
// Each batch of events is applied in one transaction that also moves the
// checkpoint, so a crash mid-batch neither loses nor repeats an event.
// Several projectors on one database (two servers) stay correct: each batch
// checks, under a row lock, that the checkpoint is where it expects.
type Projector struct {
	store *eventstore.Store
	pool  *pgxpool.Pool
	opts  ProjectorOptions

	mu       sync.Mutex
	applied  eventstore.Checkpoint
	advanced chan struct{} // closed and replaced whenever applied moves

	appliedTotal prometheus.Counter
	batchSeconds prometheus.Histogram
	eventsTotal  *prometheus.CounterVec
	taskDuration *prometheus.HistogramVec
}

// NewProjector returns a projector of store's log into the read models.
func NewProjector(store *eventstore.Store, opts ProjectorOptions) (*Projector, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	p := &Projector{
		store:    store,
		pool:     store.Pool(),
		opts:     opts,
		advanced: make(chan struct{}),
		appliedTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ordo_projection_events_applied_total", Help: "Events applied to the read models.",
		}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ordo_projection_batch_seconds", Help: "Time to apply one batch of events to the read models.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
		eventsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ordo_events_appended_total",
			Help: "Events appended to the log, by type, counted as the projector applies them: rate() is the append rate.",
		}, []string{"type"}),
		taskDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ordo_task_run_duration_seconds",
			Help:    "Time from the first start of a task run to its end, by final state, observed as the projector applies the end.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600},
		}, []string{"state"}),
	}
	if r := opts.Registerer; r != nil {
		if err := p.RegisterMetrics(r); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// RegisterMetrics registers the projector's metrics and the read models'
// gauges with r; metrics already registered there are left as they are.
func (p *Projector) RegisterMetrics(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{p.appliedTotal, p.batchSeconds, p.eventsTotal, p.taskDuration, lagCollector{p}, readModelCollector{p.pool}} {
		if err := r.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if errors.As(err, &already) {
				continue
			}
			return fmt.Errorf("register projector metrics: %w", err)
		}
	}
	return nil
}

// Run applies the log from the stored checkpoint on, following it as it
// grows, until ctx ends. Failed batches are logged and tried again.
func (p *Projector) Run(ctx context.Context) error {
	for {
		err := p.follow(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errCheckpointMoved) {
			continue
		}
		p.opts.Logger.Error("projector failed; trying again", "err", err, "in", p.opts.RetryDelay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(p.opts.RetryDelay):
		}
	}
}

func (p *Projector) follow(ctx context.Context) error {
	epoch := eventstore.HistoryEpoch()
	from, err := p.loadCheckpoint(ctx)
	if err != nil {
		return err
	}
	opts := eventstore.SubscribeOptions{BatchSize: p.opts.BatchSize, PollInterval: p.opts.PollInterval}
	return p.store.Subscribe(ctx, from, opts, func(ctx context.Context, envs []domain.Envelope) error {
		next, err := p.applyBatch(ctx, from, envs, epoch)
		if err != nil {
			return err
		}
		from = next
		return nil
	})
}

// CatchUp applies the log up to the last event committed when it is called
// and returns how many events it applied. It is Run without the following:
// for Rebuild, the CLI and tests. Events of older transactions still open
// hold it back until they end (the log is read gap-free).
func (p *Projector) CatchUp(ctx context.Context) (int, error) {
	n := 0
	head, ok, err := p.store.Head(ctx, p.pool)
	if err != nil || !ok {
		return 0, err
	}
	epoch := eventstore.HistoryEpoch()
	from, err := p.loadCheckpoint(ctx)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops a prefetch still running
	// While one batch is applied, the next one is read and decoded.
	pending := p.prefetch(ctx, from)
	for from.Less(head) {
		res := <-pending
		if res.err != nil {
			return n, res.err
		}
		if len(res.envs) == 0 {
			select { // an older transaction is still open
			case <-ctx.Done():
				return n, ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
			pending = p.prefetch(ctx, from)
			continue
		}
		pending = p.prefetch(ctx, eventstore.CheckpointOf(res.envs[len(res.envs)-1]))
		next, err := p.applyBatch(ctx, from, res.envs, epoch)
		if errors.Is(err, errCheckpointMoved) {
			epoch = eventstore.HistoryEpoch()
			if from, err = p.loadCheckpoint(ctx); err != nil {
				return n, err
			}
			pending = p.prefetch(ctx, from)
			continue
		}
		if err != nil {
			return n, err
		}
		n += len(res.envs)
		from = next
	}
	return n, nil
}

type readResult struct {
	envs []domain.Envelope
	err  error
}

// prefetch reads the batch after from in the background.
func (p *Projector) prefetch(ctx context.Context, from eventstore.Checkpoint) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		envs, err := p.store.ReadAll(ctx, p.pool, from, p.opts.BatchSize)
		ch <- readResult{envs, err}
	}()
	return ch
}

// Applied returns the checkpoint up to which this projector knows the read
// models are applied.
func (p *Projector) Applied() eventstore.Checkpoint {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applied
}

// WaitFor waits until the event at position is applied to the read models,
// or ctx ends. The API calls it after a command commits (read-your-writes).
func (p *Projector) WaitFor(ctx context.Context, position int64) error {
	cp, err := p.store.CheckpointAt(ctx, p.pool, position)
	if err != nil {
		return err
	}
	return p.WaitForCheckpoint(ctx, cp)
}

// WaitForStream waits until the last write to a stream, with everything its
// transaction appended, is applied to the read models, or ctx ends: a
// command's own write, without waiting for the rest of the log.
func (p *Projector) WaitForStream(ctx context.Context, streamID uuid.UUID) error {
	cp, ok, err := p.store.StreamCheckpoint(ctx, p.pool, streamID)
	if err != nil || !ok {
		return err
	}
	return p.WaitForCheckpoint(ctx, cp)
}

// Sync waits until every event committed before the call is applied to the
// read models, or ctx ends.
func (p *Projector) Sync(ctx context.Context) error {
	head, ok, err := p.store.Head(ctx, p.pool)
	if err != nil || !ok {
		return err
	}
	return p.WaitForCheckpoint(ctx, head)
}

// WaitForCheckpoint waits until the read models are applied up to cp, or
// ctx ends. When another process's projector does the work, it sees that
// through the stored checkpoint.
func (p *Projector) WaitForCheckpoint(ctx context.Context, cp eventstore.Checkpoint) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		p.mu.Lock()
		done, advanced := !p.applied.Less(cp), p.advanced
		p.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for read models to reach %s: %w", cp, ctx.Err())
		case <-advanced:
		case <-tick.C:
			if stored, err := readCheckpoint(ctx, p.pool); err == nil {
				p.advance(stored, false)
			}
		}
	}
}

// Lag counts the events of the log not yet applied to the read models.
func (p *Projector) Lag(ctx context.Context) (int64, error) {
	return p.store.Lag(ctx, p.pool, p.Applied())
}

// advance moves the applied checkpoint to cp; backwards only when force.
func (p *Projector) advance(cp eventstore.Checkpoint, force bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cp == p.applied || !force && cp.Less(p.applied) {
		return
	}
	p.applied = cp
	close(p.advanced)
	p.advanced = make(chan struct{})
}

func (p *Projector) loadCheckpoint(ctx context.Context) (eventstore.Checkpoint, error) {
	if _, err := p.pool.Exec(ctx, `INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING`, ReadModels); err != nil {
		return eventstore.Checkpoint{}, fmt.Errorf("create checkpoint: %w", err)
	}
	cp, err := readCheckpoint(ctx, p.pool)
	if err != nil {
		return cp, err
	}
	p.advance(cp, true)
	return cp, nil
}

// applyBatch applies envs, which follow checkpoint from in the log, in one
// transaction with the checkpoint, and returns the new checkpoint. envs
// were read in database history epoch.
func (p *Projector) applyBatch(ctx context.Context, from eventstore.Checkpoint, envs []domain.Envelope, epoch uint64) (eventstore.Checkpoint, error) {
	start := time.Now()
	next := eventstore.CheckpointOf(envs[len(envs)-1])
	var ended []taskEnd
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var txid string
		var pos int64
		err := tx.QueryRow(ctx, `SELECT transaction_id::text, position FROM projection_checkpoints WHERE name = $1 FOR UPDATE`, ReadModels).Scan(&txid, &pos)
		if err != nil {
			return fmt.Errorf("lock checkpoint: %w", err)
		}
		if stored, err := eventstore.ParseCheckpoint(txid + "-" + strconv.FormatInt(pos, 10)); err != nil || stored != from {
			return errCheckpointMoved
		}
		// This transaction's connection noted the history it reached.
		if eventstore.HistoryEpoch() != epoch {
			return errHistoryChanged
		}
		b := newBatch()
		b.ahead = readAhead(ctx, p.store, tx)
		if err := b.load(ctx, tx, envs); err != nil {
			return err
		}
		if err := b.fold(envs); err != nil {
			return err
		}
		if err := b.write(ctx, tx); err != nil {
			return err
		}
		ended = b.ended
		if _, err := tx.Exec(ctx, `UPDATE projection_checkpoints SET transaction_id = $2::text::xid8, position = $3, updated_at = now() WHERE name = $1`,
			ReadModels, strconv.FormatUint(next.TransactionID, 10), next.Position); err != nil {
			return fmt.Errorf("move checkpoint: %w", err)
		}
		if p.opts.beforeCommit != nil {
			p.opts.beforeCommit(ctx, envs)
		}
		return nil
	})
	if err != nil {
		return from, err
	}
	p.advance(next, false)
	p.appliedTotal.Add(float64(len(envs)))
	p.batchSeconds.Observe(time.Since(start).Seconds())
	for _, env := range envs {
		p.eventsTotal.WithLabelValues(env.Type).Inc()
	}
	for _, e := range ended {
		if e.duration > 0 {
			p.taskDuration.WithLabelValues(string(e.state)).Observe(e.duration.Seconds())
		}
	}
	return next, nil
}

func readCheckpoint(ctx context.Context, q eventstore.Querier) (eventstore.Checkpoint, error) {
	var txid string
	var pos int64
	err := q.QueryRow(ctx, `SELECT transaction_id::text, position FROM projection_checkpoints WHERE name = $1`, ReadModels).Scan(&txid, &pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return eventstore.Checkpoint{}, nil
	}
	if err != nil {
		return eventstore.Checkpoint{}, fmt.Errorf("read checkpoint: %w", err)
	}
	return eventstore.ParseCheckpoint(txid + "-" + strconv.FormatInt(pos, 10))
}

// lagCollector reports the projection lag when metrics are scraped.
type lagCollector struct{ p *Projector }

var lagDesc = prometheus.NewDesc("ordo_projection_lag_events", "Events of the log not yet applied to the read models.", []string{"projection"}, nil)

func (lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- lagDesc }

func (c lagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	lag, err := c.p.Lag(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(lagDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(lag), ReadModels)
}
