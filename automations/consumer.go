package automations

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// checkpointName is the consumer's row in automation_checkpoints.
const checkpointName = "automations"

// errCheckpointMoved: another consumer recorded past where this one read.
var errCheckpointMoved = errors.New("automation checkpoint moved by another consumer")

// ConsumerOptions tune a Consumer.
type ConsumerOptions struct {
	// BatchSize is the most events read and recorded in one transaction.
	// Defaults to 500.
	BatchSize int
	// PollInterval bounds how long new events wait when no notification
	// comes. Defaults to 200ms.
	PollInterval time.Duration
	// NoLeaderLock lets this consumer read without holding the leader lock,
	// at once with others: still correct (see the package doc), only
	// wasteful. For tests of that guard.
	NoLeaderLock bool
	// LeaderRetry is how often a consumer that is not the leader tries to
	// become it. Defaults to 1s.
	LeaderRetry time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// leaderLockKey is the session advisory lock the leading consumer holds
// ("ordoauto").
const leaderLockKey int64 = 0x6f72646f6175746f

// Consumer reads the log and fires the automations each run and task run
// state event matches. Any number may run: see the package doc.
type Consumer struct {
	store *eventstore.Store
	pool  *pgxpool.Pool
	river *river.Client[pgx.Tx]
	opts  ConsumerOptions

	// state as of cp, rebuilt at each session's start
	cp    eventstore.Checkpoint
	epoch uint64 // the database history the session reads (eventstore.HistoryEpoch)
	autos map[uuid.UUID]domain.Automation
	index map[triggerKey]*bucket
	runs  map[uuid.UUID]runInfo   // flow runs seen or looked up
	tasks map[uuid.UUID]uuid.UUID // task run -> flow run
	// absence and count triggers (windows.go)
	kinds   map[string][]uuid.UUID // live automations of each kind but state
	streaks map[streakKey]streak   // consecutive_failures, as of cp
}

// triggerKey is what an automation is indexed by: the kind of run and one
// state type or name its trigger names. An event is matched only against
// the automations under its state's type and name.
type triggerKey struct {
	of    string
	state string
}

type runInfo struct {
	domain.RunContext
	name         string
	deploymentID uuid.UUID
}

// maxCachedRuns bounds the runs remembered between events.
const maxCachedRuns = 100_000

// NewConsumer returns a consumer that records on store and inserts delivery
// jobs with rc.
func NewConsumer(store *eventstore.Store, rc *river.Client[pgx.Tx], opts ConsumerOptions) *Consumer {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 500
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 200 * time.Millisecond
	}
	if opts.LeaderRetry <= 0 {
		opts.LeaderRetry = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Consumer{store: store, pool: store.Pool(), river: rc, opts: opts}
}

// Run follows the log until ctx ends, while it holds the leader lock (one
// consumer of all servers reads at a time). A session that fails (a lost
// database, another consumer ahead of it) starts again from the stored
// checkpoint.
func (c *Consumer) Run(ctx context.Context) error {
	for {
		err := c.lead(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, errCheckpointMoved) {
			c.opts.Logger.Error("automation consumer stopped; starting again", "err", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
}

// lead waits for the leader lock, on a connection of its own, and reads
// while it holds it. Losing that connection loses the lock: the session is
// stopped at the next check, and until then the checkpoint guard keeps a
// new leader and this one from recording anything twice.
func (c *Consumer) lead(ctx context.Context) error {
	if c.opts.NoLeaderLock {
		return c.session(ctx)
	}
	pc, err := c.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect for the leader lock: %w", err)
	}
	conn := pc.Hijack() // closing it releases the lock
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		var leader bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, leaderLockKey).Scan(&leader); err != nil {
			return fmt.Errorf("try the leader lock: %w", err)
		}
		if leader {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(c.opts.LeaderRetry):
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	watched := make(chan struct{})
	defer func() { cancel(); <-watched }() // before the connection closes
	go func() {
		defer close(watched)
		t := time.NewTicker(c.opts.LeaderRetry)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
				if err := conn.Ping(sctx); err != nil && sctx.Err() == nil {
					c.opts.Logger.Warn("automation consumer lost its leader connection", "err", err)
					cancel()
					return
				}
			}
		}
	}()
	err = c.session(sctx)
	if ctx.Err() == nil && sctx.Err() != nil {
		return errors.New("lost the leader connection")
	}
	return err
}

func (c *Consumer) session(ctx context.Context) error {
	c.epoch = eventstore.HistoryEpoch()
	if err := c.load(ctx); err != nil {
		return err
	}
	tctx, stop := context.WithCancel(ctx)
	timers := make(chan struct{})
	go func() {
		defer close(timers)
		c.runTimers(tctx)
	}()
	defer func() { stop(); <-timers }()
	return c.store.Subscribe(ctx, c.cp, eventstore.SubscribeOptions{BatchSize: c.opts.BatchSize, PollInterval: c.opts.PollInterval}, c.handle)
}

// load reads the checkpoint and the automations as of it.
func (c *Consumer) load(ctx context.Context) error {
	if err := c.createCheckpoint(ctx); err != nil {
		return err
	}
	cp, err := readCheckpoint(ctx, c.pool)
	if err != nil {
		return err
	}
	c.cp = cp
	c.autos, c.index = map[uuid.UUID]domain.Automation{}, map[triggerKey]*bucket{}
	c.runs, c.tasks = map[uuid.UUID]runInfo{}, map[uuid.UUID]uuid.UUID{}
	c.kinds = map[string][]uuid.UUID{}
	if err := c.loadStreaks(ctx); err != nil {
		return err
	}
	envs, err := c.automationEvents(ctx)
	if err != nil {
		return err
	}
	for _, env := range envs {
		if cp.Less(eventstore.CheckpointOf(env)) {
			continue // the consumer meets it in the log
		}
		c.applyAutomation(env)
	}
	return nil
}

// automationEvents reads the events of every automation ever saved, in log
// order.
func (c *Consumer) automationEvents(ctx context.Context) ([]domain.Envelope, error) {
	rows, err := c.pool.Query(ctx, `SELECT id FROM automations`)
	if err != nil {
		return nil, fmt.Errorf("list automations: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("list automations: %w", err)
	}
	return c.store.ReadStreams(ctx, c.pool, ids)
}

// createCheckpoint starts a consumer that never ran where nothing before
// can fire: just before the first automation's first event, or, with none,
// at the stable head of the log, so that a long log is not read for
// nothing. The head is read before the automations: one saved after that
// read has its events after the head, or is among those read.
func (c *Consumer) createCheckpoint(ctx context.Context) error {
	var exists bool
	if err := c.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM automation_checkpoints WHERE name = $1)`, checkpointName).Scan(&exists); err != nil || exists {
		return err
	}
	start, _, err := c.store.StableHead(ctx, c.pool)
	if err != nil {
		return err
	}
	envs, err := c.automationEvents(ctx)
	if err != nil {
		return err
	}
	if len(envs) > 0 {
		if first := eventstore.CheckpointOf(envs[0]); first.Less(start) || first == start {
			start = eventstore.Checkpoint{TransactionID: first.TransactionID, Position: first.Position - 1}
		}
	}
	_, err = c.pool.Exec(ctx, `INSERT INTO automation_checkpoints (name, transaction_id, position) VALUES ($1, $2::text::xid8, $3) ON CONFLICT (name) DO NOTHING`,
		checkpointName, strconv.FormatUint(start.TransactionID, 10), start.Position)
	if err != nil {
		return fmt.Errorf("create automation checkpoint: %w", err)
	}
	return nil
}

func readCheckpoint(ctx context.Context, q eventstore.Querier) (eventstore.Checkpoint, error) {
	var txid string
	var pos int64
	if err := q.QueryRow(ctx, `SELECT transaction_id::text, position FROM automation_checkpoints WHERE name = $1`, checkpointName).Scan(&txid, &pos); err != nil {
		return eventstore.Checkpoint{}, fmt.Errorf("read automation checkpoint: %w", err)
	}
	t, err := strconv.ParseUint(txid, 10, 64)
	if err != nil {
		return eventstore.Checkpoint{}, fmt.Errorf("read automation checkpoint: %w", err)
	}
	return eventstore.Checkpoint{TransactionID: t, Position: pos}, nil
}

// bucket holds the live automations under one trigger key: those whose
// filter names deployments only literally, by deployment name, and the
// others (globs, or no deployment filter) in any.
type bucket struct {
	any          []uuid.UUID
	byDeployment map[string][]uuid.UUID
	n            int
}

// literalDeployments returns the deployment names a filter keeps, each
// once, when it names some and all are plain names (no glob); nil otherwise.
func literalDeployments(f domain.AutomationFilter) []string {
	if len(f.Deployments) == 0 || slices.ContainsFunc(f.Deployments, func(d string) bool { return strings.ContainsAny(d, "*?[\\") }) {
		return nil
	}
	deps := slices.Clone(f.Deployments)
	slices.Sort(deps)
	return slices.Compact(deps)
}

// applyAutomation folds an automation event into the index, and returns the
// automation before and after it.
func (c *Consumer) applyAutomation(env domain.Envelope) (before, after domain.Automation) {
	before, had := c.autos[env.StreamID]
	if !had {
		before.ID = env.StreamID
	}
	after = before.Apply(env.Event, env.RecordedAt)
	after.Stream = env.Version
	if live(before) {
		c.unindex(before)
	}
	if after.Deleted {
		delete(c.autos, after.ID)
		return before, after
	}
	c.autos[after.ID] = after
	if live(after) {
		c.indexAdd(after)
	}
	return before, after
}

func (c *Consumer) indexAdd(a domain.Automation) {
	c.kindsAdd(a)
	deps := literalDeployments(a.Spec.Filter)
	for _, k := range keysOf(a.Spec) {
		b := c.index[k]
		if b == nil {
			b = &bucket{byDeployment: map[string][]uuid.UUID{}}
			c.index[k] = b
		}
		b.n++
		if deps == nil {
			b.any = append(b.any, a.ID)
		}
		for _, d := range deps {
			b.byDeployment[d] = append(b.byDeployment[d], a.ID)
		}
	}
}

func (c *Consumer) unindex(a domain.Automation) {
	c.kindsRemove(a)
	deps := literalDeployments(a.Spec.Filter)
	other := func(id uuid.UUID) bool { return id == a.ID }
	for _, k := range keysOf(a.Spec) {
		b := c.index[k]
		if b == nil {
			continue
		}
		if b.n--; b.n == 0 {
			delete(c.index, k)
			continue
		}
		if deps == nil {
			b.any = slices.DeleteFunc(b.any, other)
		}
		for _, d := range deps {
			if b.byDeployment[d] = slices.DeleteFunc(b.byDeployment[d], other); len(b.byDeployment[d]) == 0 {
				delete(b.byDeployment, d)
			}
		}
	}
}

func live(a domain.Automation) bool { return a.Stream > 0 && !a.Paused && !a.Deleted }

func keysOf(s domain.AutomationSpec) []triggerKey {
	if s.Trigger.Type != domain.TriggerState {
		return nil
	}
	keys := make([]triggerKey, 0, len(s.Trigger.States))
	for _, st := range s.Trigger.States {
		if k := (triggerKey{s.Trigger.Of, st}); !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// buckets returns the index's buckets a state of a run kind falls in.
func (c *Consumer) buckets(of string, state domain.State) (*bucket, *bucket) {
	return c.index[triggerKey{of, string(state.Type)}], c.index[triggerKey{of, state.Name}]
}

// handle fires the automations a batch of events matches and records them
// with the checkpoint after the batch. It first learns the runs of the
// events that may fire something, then matches each event in log order
// against the automations as they were at that event.
func (c *Consumer) handle(ctx context.Context, envs []domain.Envelope) error {
	changes := false
	for _, env := range envs {
		c.remember(env)
		changes = changes || env.StreamType == domain.StreamAutomation
	}
	var need []domain.Envelope
	for _, env := range envs {
		if state, ok := domain.StateReached(env.Event, env.RecordedAt); ok {
			if b1, b2 := c.buckets(env.StreamType, state); changes || b1 != nil || b2 != nil || len(c.kinds) > 0 {
				need = append(need, env)
			}
		}
	}
	if err := c.lookUpRuns(ctx, need); err != nil {
		return err
	}
	var fs []firing
	var ops []op
	for _, env := range envs {
		switch env.StreamType {
		case domain.StreamAutomation:
			before, after := c.applyAutomation(env)
			o, err := c.automationWindows(ctx, env, before, after)
			if err != nil {
				return err
			}
			ops = append(ops, o...)
			continue
		case domain.StreamDeployment:
			ops = append(ops, c.deploymentWindows(env)...)
			continue
		}
		if state, ok := domain.StateReached(env.Event, env.RecordedAt); ok {
			fs = append(fs, c.match(env, state)...)
			wfs, o := c.matchWindows(env, state)
			fs, ops = append(fs, wfs...), append(ops, o...)
		}
	}
	next := eventstore.CheckpointOf(envs[len(envs)-1])
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		cp, err := lockCheckpoint(ctx, tx)
		if err != nil {
			return err
		}
		if cp != c.cp {
			return errCheckpointMoved
		}
		// Read in a history a failover replaced: they may be events the
		// log no longer has. The session starts again from the stored
		// checkpoint.
		if eventstore.HistoryEpoch() != c.epoch {
			return fmt.Errorf("%w: the database's history changed (a failover)", errCheckpointMoved)
		}
		if err := recordFirings(ctx, tx, c.store, c.river, "automations", fs); err != nil {
			return err
		}
		if err := runOps(ctx, tx, ops); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE automation_checkpoints SET transaction_id = $2::text::xid8, position = $3, updated_at = now() WHERE name = $1`,
			checkpointName, strconv.FormatUint(next.TransactionID, 10), next.Position)
		return err
	})
	if err != nil {
		return err
	}
	if len(fs) > 0 {
		c.store.Committed()
	}
	c.cp = next
	return nil
}

func lockCheckpoint(ctx context.Context, tx pgx.Tx) (eventstore.Checkpoint, error) {
	var txid string
	var pos int64
	if err := tx.QueryRow(ctx, `SELECT transaction_id::text, position FROM automation_checkpoints WHERE name = $1 FOR UPDATE`, checkpointName).Scan(&txid, &pos); err != nil {
		return eventstore.Checkpoint{}, fmt.Errorf("lock automation checkpoint: %w", err)
	}
	t, err := strconv.ParseUint(txid, 10, 64)
	return eventstore.Checkpoint{TransactionID: t, Position: pos}, err
}

// remember keeps what filters need from the events that create runs.
func (c *Consumer) remember(env domain.Envelope) {
	if len(c.runs) > maxCachedRuns || len(c.tasks) > maxCachedRuns {
		c.runs, c.tasks = map[uuid.UUID]runInfo{}, map[uuid.UUID]uuid.UUID{}
	}
	switch e := env.Event.(type) {
	case domain.FlowRunCreated:
		c.runs[env.StreamID] = runInfoOf(env.StreamID, e)
	case domain.TaskRunCreated:
		c.tasks[env.StreamID] = e.FlowRunID
	}
}

func runInfoOf(id uuid.UUID, e domain.FlowRunCreated) runInfo {
	return runInfo{RunContext: domain.RunContext{FlowRunID: id, DeploymentName: e.DeploymentName, Tags: e.Tags, WorkQueue: e.WorkQueue, Flow: e.Flow.Name},
		name: e.Name, deploymentID: e.DeploymentID}
}

// lookUpRuns reads, from the log, the runs of events that the consumer has
// not seen created.
func (c *Consumer) lookUpRuns(ctx context.Context, envs []domain.Envelope) error {
	var tasks []uuid.UUID
	for _, env := range envs {
		if env.StreamType == domain.StreamTaskRun {
			if _, ok := c.tasks[env.StreamID]; !ok {
				tasks = append(tasks, env.StreamID)
			}
		}
	}
	if len(tasks) > 0 {
		m, err := c.store.TaskRunFlowRuns(ctx, c.pool, tasks)
		if err != nil {
			return err
		}
		for t, f := range m {
			c.tasks[t] = f
		}
	}
	var runs []uuid.UUID
	for _, env := range envs {
		if id, ok := c.flowRunOf(env); ok {
			if _, known := c.runs[id]; !known && !slices.Contains(runs, id) {
				runs = append(runs, id)
			}
		}
	}
	if len(runs) == 0 {
		return nil
	}
	envs, err := c.store.ReadStreams(ctx, c.pool, runs)
	if err != nil {
		return err
	}
	for _, env := range envs {
		if e, ok := env.Event.(domain.FlowRunCreated); ok {
			c.runs[env.StreamID] = runInfoOf(env.StreamID, e)
		}
	}
	return nil
}

func (c *Consumer) flowRunOf(env domain.Envelope) (uuid.UUID, bool) {
	if env.StreamType == domain.StreamFlowRun {
		return env.StreamID, true
	}
	id, ok := c.tasks[env.StreamID]
	return id, ok
}

// runOf returns the flow run of a run's event, as far as it is known.
func (c *Consumer) runOf(env domain.Envelope) runInfo {
	var info runInfo
	if id, ok := c.flowRunOf(env); ok {
		info = c.runs[id]
		info.FlowRunID = id
	}
	return info
}

// match returns the firings of an event that reached state: the
// automations under its state's buckets, for any deployment or for its
// run's, whose trigger and filter it passes.
func (c *Consumer) match(env domain.Envelope, state domain.State) []firing {
	b1, b2 := c.buckets(env.StreamType, state)
	if b1 == nil && b2 == nil {
		return nil
	}
	info := c.runOf(env)
	var ids []uuid.UUID
	for _, b := range []*bucket{b1, b2} {
		if b != nil {
			ids = append(append(ids, b.any...), b.byDeployment[info.DeploymentName]...)
		}
	}
	if b1 != nil && b2 != nil {
		slices.SortFunc(ids, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
		ids = slices.Compact(ids)
	}
	var fs []firing
	for _, id := range ids {
		a := c.autos[id]
		if !a.Spec.Trigger.MatchesState(state) || !a.Spec.Filter.Matches(info.RunContext) {
			continue
		}
		fired := domain.AutomationFired{AutomationID: id, TriggerPosition: env.Position, TriggerType: env.Type, Trigger: domain.TriggerState,
			FlowRunID: info.FlowRunID, State: state}
		if env.StreamType == domain.StreamTaskRun {
			t := env.StreamID
			fired.TaskRunID = &t
		}
		fs = append(fs, firing{automation: a, fired: fired, run: info.RunContext, runName: info.name, at: env.RecordedAt})
	}
	return fs
}
