package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/ordoflow/ordo/automations"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/bench/loggen"
)

// failRate is how many runs fail per second in the automation latency
// scenario.
const failRate = 100

const benchHookSecret = "bench-hook-secret"

// hookTimes is a webhook receiver on loopback that checks signatures and
// notes when the first request of each firing's run arrived.
type hookTimes struct {
	mu    sync.Mutex
	at    map[uuid.UUID]time.Time
	tests int // test firings received
	bad   int
}

func (h *hookTimes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	body, _ := io.ReadAll(r.Body)
	sig := r.Header.Get(automations.HeaderSignature)
	ts, _, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ",")
	unix, _ := strconv.ParseInt(ts, 10, 64)
	var ce automations.CloudEvent
	if json.Unmarshal(body, &ce) != nil || ce.Data.FlowRun == nil && !ce.Data.Test || automations.Sign([]byte(benchHookSecret), time.Unix(unix, 0), body) != sig {
		h.mu.Lock()
		h.bad++
		h.mu.Unlock()
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	if ce.Data.Test {
		h.tests++
	} else if _, seen := h.at[ce.Data.FlowRun.ID]; !seen {
		h.at[ce.Data.FlowRun.ID] = now
	}
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookTimes) received() (int, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.at), h.bad
}

// otherAutomation is the i-th of the automations that the scenarios' runs
// do not match: each on a deployment of its own, on a mix of states and
// of flow runs and task runs.
func otherAutomation(i int) domain.AutomationSpec {
	states := [][]string{{"FAILED"}, {"CRASHED"}, {"FAILED", "CRASHED"}, {"COMPLETED"}, {"CANCELLED"}}
	of := domain.StreamFlowRun
	if i%3 == 2 {
		of = domain.StreamTaskRun
	}
	return domain.AutomationSpec{Name: fmt.Sprintf("team %05d", i),
		Trigger: domain.AutomationTrigger{Type: domain.TriggerState, Of: of, States: states[i%len(states)]},
		Filter:  domain.AutomationFilter{Deployments: []string{fmt.Sprintf("svc-%05d", i)}},
		Actions: []domain.AutomationAction{{Type: "webhook", URL: fmt.Sprintf("https://hooks.example.com/ordo/%d", i), SecretEnv: "ORDO_BENCH_HOOK_SECRET"}}}
}

// defineAutomations saves the matching automations and as many others as
// make total, through the automations service, 8 at a time.
func defineAutomations(ctx context.Context, svc *automations.Service, total int, matching ...domain.AutomationSpec) error {
	specs := slices.Clone(matching)
	for i := len(specs); i < total; i++ {
		specs = append(specs, otherAutomation(i))
	}
	work := make(chan domain.AutomationSpec)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for s := range work {
				if _, err := svc.AutomationCreate(ctx, s, "bench"); err != nil {
					errs <- fmt.Errorf("create automation %q: %w", s.Name, err)
					return
				}
			}
		})
	}
	var err error
feed:
	for _, s := range specs {
		select {
		case work <- s:
		case err = <-errs:
			break feed
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	return errors.Join(err, <-errs)
}

// automationStack is what a server runs for automations, on one database:
// the consumer and River's delivery client.
type automationStack struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
	river *river.Client[pgx.Tx]
	svc   *automations.Service
	stop  func()
}

func newAutomationStack(ctx context.Context, env Env) (*automationStack, error) {
	pool, err := newPool(ctx, env)
	if err != nil {
		return nil, err
	}
	rc, err := automations.NewRiverClient(pool, automations.DeliveryOptions{AllowPrivate: true, Logger: quiet,
		Getenv: func(string) string { return benchHookSecret }})
	if err != nil {
		pool.Close()
		return nil, err
	}
	store := eventstore.New(pool, domain.NewRegistry())
	return &automationStack{pool: pool, store: store, river: rc, svc: automations.NewService(store, rc, automations.ServiceOptions{AllowPrivate: true}),
		stop: func() { store.Close(); pool.Close() }}, nil
}

// run starts the consumer and, when deliver, River's delivery workers.
func (s *automationStack) run(ctx context.Context, deliver bool) error {
	ctx, cancel := context.WithCancel(ctx)
	if deliver {
		if err := s.river.Start(ctx); err != nil {
			cancel()
			return err
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = automations.NewConsumer(s.store, s.river, automations.ConsumerOptions{Logger: quiet}).Run(ctx)
	}()
	closeAll := s.stop
	s.stop = func() {
		cancel()
		<-done
		if deliver {
			stop, cancelStop := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_ = s.river.Stop(stop)
			cancelStop()
		}
		closeAll()
	}
	return nil
}

// AutomationLatency fails runs at failRate a second for d, with defined
// automations of which one matches them and POSTs to a receiver on
// loopback, and returns the time from each failure's commit (when its
// append returned) to its webhook's arrival.
func AutomationLatency(ctx context.Context, env Env, defined int, d time.Duration) (*Latency, error) {
	hook := &hookTimes{at: map[uuid.UUID]time.Time{}}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	s, err := newAutomationStack(ctx, env)
	if err != nil {
		return nil, err
	}
	defer func() { s.stop() }()
	env.logf("defining %s automations", count(defined))
	matching, err := s.svc.AutomationCreate(ctx, domain.AutomationSpec{Name: "failures",
		Trigger: domain.AutomationTrigger{Type: domain.TriggerState, Of: domain.StreamFlowRun, States: []string{"FAILED"}},
		Filter:  domain.AutomationFilter{Deployments: []string{"bench-fail"}},
		Actions: []domain.AutomationAction{{Type: "webhook", URL: srv.URL + "/hook", SecretEnv: "ORDO_BENCH_HOOK_SECRET"}}}, "bench")
	if err != nil {
		return nil, err
	}
	if err := defineAutomations(ctx, s.svc, defined-1); err != nil {
		return nil, err
	}
	if err := s.run(ctx, true); err != nil {
		return nil, err
	}
	// A test firing first, so that what is measured is a running server,
	// not River's start.
	if _, err := s.svc.AutomationTest(ctx, matching.ID, "bench"); err != nil {
		return nil, err
	}
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		hook.mu.Lock()
		tests := hook.tests
		hook.mu.Unlock()
		if tests > 0 {
			break
		}
		if time.Since(start) > time.Minute {
			return nil, errors.New("the test firing did not arrive within a minute")
		}
	}
	// The runs are appended through a store of their own, as another
	// process's would be: the consumer learns of them by NOTIFY.
	app := eventstore.New(s.pool, domain.NewRegistry())
	defer app.Close()
	n := int(d.Seconds() * failRate)
	env.logf("failing %d runs a second for %v", failRate, d)
	committed := make([]time.Time, n)
	ids := make([]uuid.UUID, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var appendErr error
	tick := time.NewTicker(time.Second / failRate)
	for i := range n {
		<-tick.C
		wg.Go(func() {
			id := uuid.Must(uuid.NewV7())
			ids[i] = id
			created := domain.FlowRunCreated{Name: fmt.Sprintf("fail-%05d", i), DeploymentName: "bench-fail", WorkQueue: "default",
				Flow: domain.FlowSpec{Name: "fails"}, ScheduledAt: time.Now()}
			_, err := app.AppendAlone(ctx, eventstore.Append{StreamID: id, Events: []domain.Event{created, domain.FlowRunPending{}, domain.FlowRunStarted{}}})
			if err == nil {
				_, err = app.AppendAlone(ctx, eventstore.Append{StreamID: id, ExpectedVersion: 3, Events: []domain.Event{domain.FlowRunFailed{Message: "exit code 1"}}})
				committed[i] = time.Now()
			}
			if err != nil {
				mu.Lock()
				appendErr = errors.Join(appendErr, err)
				mu.Unlock()
			}
		})
	}
	tick.Stop()
	wg.Wait()
	if appendErr != nil {
		return nil, fmt.Errorf("append runs: %w", appendErr)
	}
	// Wait for the webhooks; give up after a minute without one.
	for last, lastAt := -1, time.Now(); ; time.Sleep(10 * time.Millisecond) {
		got, bad := hook.received()
		if bad > 0 {
			return nil, fmt.Errorf("the receiver refused %d requests", bad)
		}
		if got == n {
			break
		}
		if got != last {
			last, lastAt = got, time.Now()
		} else if time.Since(lastAt) > time.Minute {
			return nil, fmt.Errorf("%d of %d webhooks received, none for a minute", got, n)
		}
	}
	res := &Latency{}
	// Where the time went, from the log and River's table: the firing's
	// transaction started (its AutomationFired's recorded_at), its
	// delivery job was fetched (attempted_at).
	rows, err := s.pool.Query(ctx, `
SELECT (e.data->>'flow_run_id')::uuid, e.recorded_at, j.attempted_at
FROM events e JOIN river_job j ON (j.args->>'firing_id')::uuid = e.stream_id
WHERE e.type = 'AutomationFired'`)
	if err != nil {
		return nil, err
	}
	type parts struct{ fired, fetched time.Time }
	byRun := map[uuid.UUID]parts{}
	for rows.Next() {
		var id uuid.UUID
		var p parts
		if err := rows.Scan(&id, &p.fired, &p.fetched); err != nil {
			return nil, err
		}
		byRun[id] = p
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	hook.mu.Lock()
	for i, id := range ids {
		res.Total = append(res.Total, ms(hook.at[id].Sub(committed[i])))
		if p, ok := byRun[id]; ok {
			res.ToFiring = append(res.ToFiring, ms(p.fired.Sub(committed[i])))
			res.ToFetch = append(res.ToFetch, ms(p.fetched.Sub(p.fired)))
			res.ToReceipt = append(res.ToReceipt, ms(hook.at[id].Sub(p.fetched)))
		}
	}
	hook.mu.Unlock()
	for _, xs := range [][]float64{res.Total, res.ToFiring, res.ToFetch, res.ToReceipt} {
		slices.Sort(xs)
	}
	return res, nil
}

// Latency is what AutomationLatency measured, in milliseconds, each sorted:
// the whole, and its parts: the failure's commit to the start of the
// firing's transaction, from there to the delivery job's fetch, and from
// there to the webhook's arrival.
type Latency struct {
	Total, ToFiring, ToFetch, ToReceipt []float64
}

func automationLatencyScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	sz := opts.Sizes
	res, err := AutomationLatency(ctx, env, sz.Automations, sz.AutomationTime)
	if err != nil {
		return nil, err
	}
	lat := res.Total
	p50, p99, worst := percentile(lat, 0.5), percentile(lat, 0.99), lat[len(lat)-1]
	part := func(xs []float64) string {
		if len(xs) == 0 {
			return "?"
		}
		return fmt.Sprintf("p50 %s, p99 %s", millis(percentile(xs, 0.5)), millis(percentile(xs, 0.99)))
	}
	return []Row{{
		What: fmt.Sprintf("automation latency: a run's failure committed → its webhook received on loopback, %d runs failing per second for %v, %s automations defined (one matches)",
			failRate, sz.AutomationTime, count(sz.Automations)),
		Ordo:    fmt.Sprintf("p50 %s, p99 %s, max %s", millis(p50), millis(p99), millis(worst)),
		Target:  "p50 ≤ 50 ms, p99 ≤ 500 ms",
		Checks:  []Check{atMost("p50 ms", p50, 50), atMost("p99 ms", p99, 500)},
		Metrics: positive(map[string]float64{"p50_ms": p50, "p99_ms": p99, "max_ms": worst, "webhooks": float64(len(lat))}),
		Note: fmt.Sprintf("its parts: commit → the firing's transaction %s; → its delivery job fetched %s; → received %s",
			part(res.ToFiring), part(res.ToFetch), part(res.ToReceipt)),
	}}, nil
}

// consumerDB is a database whose automation consumer is measured: the
// synthetic log of loggen is loaded into it a round at a time.
type consumerDB struct {
	*automationStack
	gen     *loggen.Gen
	defined int
}

func newConsumerDB(ctx context.Context, env Env, defined int) (*consumerDB, error) {
	s, err := newAutomationStack(ctx, env)
	if err != nil {
		return nil, err
	}
	db := &consumerDB{automationStack: s, gen: loggen.New(), defined: defined}
	// What loggen's runs match: their failures, and their task runs'
	// (through a glob, which every event of its kind is checked against).
	err = defineAutomations(ctx, s.svc, defined,
		domain.AutomationSpec{Name: "training failures",
			Trigger: domain.AutomationTrigger{Type: domain.TriggerState, Of: domain.StreamFlowRun, States: []string{"FAILED", "CRASHED"}},
			Filter:  domain.AutomationFilter{Deployments: []string{"model_training_validation"}},
			Actions: []domain.AutomationAction{{Type: "webhook", URL: "https://hooks.example.com/ordo/training", SecretEnv: "ORDO_BENCH_HOOK_SECRET"}}},
		domain.AutomationSpec{Name: "model task failures",
			Trigger: domain.AutomationTrigger{Type: domain.TriggerState, Of: domain.StreamTaskRun, States: []string{"FAILED"}},
			Filter:  domain.AutomationFilter{Deployments: []string{"model_*"}},
			Actions: []domain.AutomationAction{{Type: "webhook", URL: "https://hooks.example.com/ordo/tasks", SecretEnv: "ORDO_BENCH_HOOK_SECRET"}}})
	if err == nil {
		err = s.run(ctx, false) // deliveries are only queued
	}
	if err != nil {
		s.stop()
		return nil, err
	}
	return db, nil
}

// round loads events more events and returns how many the consumer went
// through per second: from their commit until its checkpoint is past them.
func (db *consumerDB) round(ctx context.Context, events int) (float64, error) {
	from := db.gen.Total
	if err := db.gen.Load(ctx, db.pool, from+events, nil); err != nil {
		return 0, err
	}
	began := time.Now()
	db.store.Committed() // wake the consumer now, not at its next poll
	var last int64
	if err := db.pool.QueryRow(ctx, `SELECT max(position) FROM events`).Scan(&last); err != nil {
		return 0, err
	}
	for {
		var at int64
		// No row yet: the consumer has not started (it creates its
		// checkpoint when it does).
		if err := db.pool.QueryRow(ctx, `SELECT coalesce(max(position), -1) FROM automation_checkpoints`).Scan(&at); err != nil {
			return 0, err
		}
		if at >= last {
			return float64(db.gen.Total-from) / time.Since(began).Seconds(), nil
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ConsumerThroughput measures the automation consumer's throughput with
// few and with many automations defined, each on a database of its own
// with the same log, in interleaved rounds of events each (after a
// warm-up round). It returns the rates of each side by round.
func ConsumerThroughput(ctx context.Context, env Env, few, many, events, rounds int) (fewRates, manyRates []float64, err error) {
	var dbs [2]*consumerDB
	for i, n := range []int{few, many} {
		env.logf("a database with %s automations", count(n))
		if dbs[i], err = newConsumerDB(ctx, env, n); err != nil {
			return nil, nil, err
		}
		defer dbs[i].stop()
	}
	for _, db := range dbs {
		if _, err := db.round(ctx, events/10); err != nil {
			return nil, nil, err
		}
	}
	for r := range rounds {
		rates := [2]float64{}
		for k := range 2 {
			i := (r + k) % 2 // alternate which side goes first
			if rates[i], err = dbs[i].round(ctx, events); err != nil {
				return nil, nil, err
			}
		}
		env.logf("round %d: %s events/s with %s automations, %s with %s", r+1, count(rates[0]), count(few), count(rates[1]), count(many))
		fewRates, manyRates = append(fewRates, rates[0]), append(manyRates, rates[1])
	}
	return fewRates, manyRates, nil
}

func consumerThroughputScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	sz := opts.Sizes
	const few = 10
	fewRates, manyRates, err := ConsumerThroughput(ctx, env, few, sz.AutomationsMany, sz.AutomationEvents, sz.AutomationRounds)
	if err != nil {
		return nil, err
	}
	ratios := make([]float64, len(fewRates))
	for i := range ratios {
		ratios[i] = manyRates[i] / fewRates[i]
	}
	r := median(ratios)
	return []Row{{
		What: fmt.Sprintf("automation consumer throughput with %s automations next to %d, the same log of ML pipeline runs (%s events a round, %d interleaved rounds), two automations matching in both",
			count(sz.AutomationsMany), few, count(sz.AutomationEvents), sz.AutomationRounds),
		Ordo:     fmt.Sprintf("%s events/s", count(median(manyRates))),
		Baseline: fmt.Sprintf("%s events/s with %d", count(median(fewRates)), few),
		Ratio:    ratio(r),
		Target:   "≥ 0.8",
		Checks:   []Check{atLeast("ratio", r, 0.8)},
		Metrics: positive(map[string]float64{"many_events_per_s": median(manyRates), "few_events_per_s": median(fewRates),
			"automations": float64(sz.AutomationsMany)}),
		Note: "ratio: the median of the rounds' ratios",
	}}, nil
}
