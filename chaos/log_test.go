package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
)

// runLog is the event log read back at the end of a test, by stream.
type runLog struct {
	events   []domain.Envelope
	streams  map[uuid.UUID][]domain.Envelope
	flowRuns map[uuid.UUID]domain.FlowRunCreated
}

// readLog reads the whole event log in position order and decodes it.
func (c *cluster) readLog() *runLog {
	c.t.Helper()
	ctx := context.Background()
	rows, err := c.db.Query(ctx, `
SELECT position, stream_id, stream_type, version, type, data, metadata, recorded_at FROM events ORDER BY position`)
	if err != nil {
		c.t.Fatal(err)
	}
	defer rows.Close()
	reg := domain.NewRegistry()
	l := &runLog{streams: map[uuid.UUID][]domain.Envelope{}, flowRuns: map[uuid.UUID]domain.FlowRunCreated{}}
	for rows.Next() {
		var (
			e    domain.Envelope
			meta []byte
		)
		if err := rows.Scan(&e.Position, &e.StreamID, &e.StreamType, &e.Version, &e.Type, &e.Data, &meta, &e.RecordedAt); err != nil {
			c.t.Fatal(err)
		}
		if err := json.Unmarshal(meta, &e.Metadata); err != nil {
			c.t.Fatal(err)
		}
		if err := reg.DecodeEnvelope(&e); err != nil {
			c.t.Fatalf("event %d: %v", e.Position, err)
		}
		l.events = append(l.events, e)
		l.streams[e.StreamID] = append(l.streams[e.StreamID], e)
		if fr, ok := e.Event.(domain.FlowRunCreated); ok {
			l.flowRuns[e.StreamID] = fr
		}
	}
	if err := rows.Err(); err != nil {
		c.t.Fatal(err)
	}
	return l
}

// terminalFlowRunEvents are the event types that end a flow run.
var terminalFlowRunEvents = []string{"FlowRunCompleted", "FlowRunFailed", "FlowRunCrashed", "FlowRunCancelled"}

// waitEnded waits until every one of the flow runs has ended in the log,
// logging progress every 10 s. How long that takes follows the machine's
// speed, so no deadline is guessed: it fails only when the runs stop
// progressing, that is when for quiet no event was appended to any of the
// runs or their task runs while some have not ended. quiet is the longest
// silence the test's own set-up allows a healthy system (its timers: a
// dead worker's heartbeat timeout, a waiting attempt's recheck), never a
// guess of how fast the machine is.
func (c *cluster) waitEnded(runs []uuid.UUID, quiet time.Duration) {
	c.t.Helper()
	ctx := context.Background()
	streams := slices.Clone(runs)
	rows, err := c.db.Query(ctx, `
SELECT t.value::uuid FROM events e, jsonb_each_text(e.data->'task_run_ids') t
WHERE e.stream_id = ANY($1) AND e.type = 'FlowRunCreated'`, runs)
	if err != nil {
		c.t.Fatal(err)
	}
	taskRuns, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		c.t.Fatal(err)
	}
	streams = append(streams, taskRuns...)
	c.progressing(fmt.Sprintf("all %d runs end", len(runs)), quiet, func() (int, bool) {
		var ended, events int
		if err := c.db.QueryRow(ctx, `
SELECT count(DISTINCT stream_id) FILTER (WHERE stream_id = ANY($1) AND type = ANY($2)), count(*)
FROM events WHERE stream_id = ANY($3)`, runs, terminalFlowRunEvents, streams).Scan(&ended, &events); err != nil {
			c.t.Logf("count ended runs: %v", err)
			return -1, false
		}
		return events, ended == len(runs)
	}, func() { c.explainNotEnded(runs) })
}

// explainNotEnded logs why runs that do not end stay open: for a few of
// them, the last event of each stream and their task run jobs; and the work
// queue slots, which a waiting attempt needs.
func (c *cluster) explainNotEnded(runs []uuid.UUID) {
	ctx := context.Background()
	rows, err := c.db.Query(ctx, `
SELECT r.id FROM unnest($1::uuid[]) AS r(id)
WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.stream_id = r.id AND e.type = ANY($2)) LIMIT 5`, runs, terminalFlowRunEvents)
	if err != nil {
		c.t.Logf("find runs not ended: %v", err)
		return
	}
	open, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		c.t.Logf("find runs not ended: %v", err)
		return
	}
	for _, id := range open {
		c.t.Logf("  not ended: run %s: %s", id, c.whyNotEnded(id))
	}
	rows, err = c.db.Query(ctx, `
SELECT s.queue, s.state, s.job_id, coalesce(j.state::text, 'gone'), coalesce(s.worker_id::text, '-'), now() - s.created_at, now() - s.updated_at
FROM work_queue_slots s LEFT JOIN river_job j ON j.id = s.job_id
ORDER BY s.state = 'waiting', s.created_at LIMIT 40`)
	if err != nil {
		c.t.Logf("read work queue slots: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var (
			queue, state, jobState, worker string
			job                            int64
			age, changed                   time.Duration
		)
		if rows.Scan(&queue, &state, &job, &jobState, &worker, &age, &changed) == nil {
			c.t.Logf("  slot row: queue %s %s, job %d %s, worker %s, asked %v ago, changed %v ago", queue, state, job, jobState, worker, age.Round(time.Second), changed.Round(time.Second))
		}
	}
}

// attemptOutcome returns the attempt an event ends and whether it ends one:
// a completion, a failure that is retried, or a failure for good.
func attemptOutcome(e domain.Event) (attempt int, crashed, ok bool) {
	switch e := e.(type) {
	case domain.TaskRunCompleted:
		return e.Attempt, false, true
	case domain.TaskRunRetryScheduled:
		return e.Attempt, e.Crashed, true
	case domain.TaskRunFailed:
		return e.Attempt, e.Crashed, true
	}
	return 0, false, false
}

// onceStats counts what exactlyOnce went through.
type onceStats struct {
	flowRuns, taskRuns, attempts, crashed, refused int
}

func (s onceStats) String() string {
	return fmt.Sprintf("%d flow runs and %d task runs each ended exactly once, COMPLETED; %d attempts each started once and ended once (%d recorded as crashed, %d late results refused)",
		s.flowRuns, s.taskRuns, s.attempts, s.crashed, s.refused)
}

// checkExactlyOnce fails the test unless the runs ended exactly once (see
// exactlyOnce), and logs what it checked.
func (c *cluster) checkExactlyOnce(l *runLog, runs []uuid.UUID) {
	c.t.Helper()
	st, problems := l.exactlyOnce(runs, c.readLedger())
	report(c.t, "runs that did not end exactly once", problems)
	c.t.Log(st)
}

// report fails the test with the first 20 problems, if there are any.
func report(t *testing.T, what string, problems []string) {
	t.Helper()
	if len(problems) == 0 {
		return
	}
	if len(problems) > 20 {
		problems = append(problems[:20], fmt.Sprintf("... and %d more", len(problems)-20))
	}
	t.Errorf("%s:\n  %s", what, strings.Join(problems, "\n  "))
}

// exactlyOnce checks, in the log, that each of the flow runs and each of
// its task runs has exactly one terminal event, a completion; that each
// attempt started once and has exactly one outcome (so no completion was
// lost or recorded twice); and that each recorded completion is one a task
// process really made: its result names its attempt and the ledger has it.
func (l *runLog) exactlyOnce(runs []uuid.UUID, ledger []execution) (onceStats, []string) {
	type key struct {
		taskRun uuid.UUID
		attempt int
	}
	ran := map[key]bool{}
	for _, e := range ledger {
		ran[key{e.taskRun, e.attempt}] = true
	}
	var (
		st       onceStats
		problems []string
	)
	report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	for _, id := range runs {
		fr, ok := l.flowRuns[id]
		if !ok {
			report("flow run %s: no FlowRunCreated in the log", id)
			continue
		}
		st.flowRuns++
		var ends []string
		for _, e := range l.streams[id] {
			if slices.Contains(terminalFlowRunEvents, e.Type) {
				ends = append(ends, e.Type)
			}
		}
		if len(ends) != 1 || ends[0] != "FlowRunCompleted" {
			report("flow run %s: terminal events %v, want one FlowRunCompleted", id, ends)
		}
		for _, task := range slices.Sorted(maps.Keys(fr.TaskRunIDs)) {
			trID := fr.TaskRunIDs[task]
			st.taskRuns++
			started := map[int]int{}
			outcomes := map[int]int{}
			var terminal []domain.Envelope
			for _, e := range l.streams[trID] {
				switch ev := e.Event.(type) {
				case domain.TaskRunStarted:
					started[ev.Attempt]++
				case domain.TaskRunResultRefused:
					st.refused++
				case domain.TaskRunCached, domain.TaskRunCancelled:
					terminal = append(terminal, e)
				}
				if attempt, crashed, ok := attemptOutcome(e.Event); ok {
					outcomes[attempt]++
					if crashed {
						st.crashed++
					}
					if e.Type != "TaskRunRetryScheduled" {
						terminal = append(terminal, e)
					}
				}
			}
			for attempt, n := range started {
				st.attempts++
				if n != 1 || outcomes[attempt] != 1 {
					report("task run %s (%s) attempt %d: started %d times, %d outcomes; want once and one", trID, task, attempt, n, outcomes[attempt])
				}
			}
			for attempt := range outcomes {
				if started[attempt] == 0 {
					report("task run %s (%s) attempt %d: an outcome without a start", trID, task, attempt)
				}
			}
			if len(terminal) != 1 || terminal[0].Type != "TaskRunCompleted" {
				types := make([]string, len(terminal))
				for i, e := range terminal {
					types[i] = e.Type
				}
				report("task run %s (%s): terminal events %v, want one TaskRunCompleted", trID, task, types)
				continue
			}
			done := terminal[0].Event.(domain.TaskRunCompleted)
			if got, want := compactJSON(done.Result), fmt.Sprintf(`{"attempt":%d}`, done.Attempt); got != want {
				report("task run %s (%s): completed attempt %d with result %s, want %s", trID, task, done.Attempt, got, want)
			}
			if !ran[key{trID, done.Attempt}] {
				report("task run %s (%s): completion of attempt %d recorded, but no task process of that attempt ran to its end", trID, task, done.Attempt)
			}
		}
	}
	return st, problems
}

func compactJSON(b []byte) string {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return string(b)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

// checkTicks checks the runs a deployment's schedule (every `every`) created,
// as the log records them: at most one run per scheduled time, and no
// scheduled time missing between the first and the last. The time a run
// stands for is its scheduled_runs row's (runs created after their time
// are due when created); it returns the runs of the times up to through,
// in order, after checking that those times start no later than from and
// reach through.
func (c *cluster) checkTicks(l *runLog, deployment uuid.UUID, every time.Duration, from, through time.Time) []uuid.UUID {
	c.t.Helper()
	standsFor := map[uuid.UUID]time.Time{}
	rows, err := c.db.Query(context.Background(), `SELECT flow_run_id, scheduled_at FROM scheduled_runs WHERE deployment_id = $1`, deployment)
	if err != nil {
		c.t.Fatal(err)
	}
	for rows.Next() {
		var (
			id uuid.UUID
			at time.Time
		)
		if err := rows.Scan(&id, &at); err != nil {
			c.t.Fatal(err)
		}
		standsFor[id] = at
	}
	if err := rows.Err(); err != nil {
		c.t.Fatal(err)
	}
	byTick := map[time.Time][]uuid.UUID{}
	name := deployment.String()
	for id, fr := range l.flowRuns {
		if fr.DeploymentID != deployment || !fr.AutoScheduled {
			continue
		}
		name = fr.DeploymentName
		at, ok := standsFor[id]
		if !ok {
			at = fr.ScheduledAt
		}
		at = at.UTC()
		byTick[at] = append(byTick[at], id)
	}
	ticks := slices.SortedFunc(maps.Keys(byTick), time.Time.Compare)
	if len(ticks) == 0 {
		c.t.Fatalf("the schedule of %s created no run", name)
	}
	problems := gridProblems(byTick, every)
	if ticks[0].After(from) || ticks[len(ticks)-1].Before(through) {
		problems = append(problems, fmt.Sprintf("runs from %s to %s do not cover %s to %s", ticks[0].Format(time.RFC3339), ticks[len(ticks)-1].Format(time.RFC3339), from.Format(time.RFC3339), through.Format(time.RFC3339)))
	}
	report(c.t, fmt.Sprintf("the runs of %s's schedule are not one per %v", name, every), problems)
	if c.t.Failed() {
		c.t.FailNow()
	}
	var upTo []uuid.UUID
	for _, at := range ticks {
		if !at.After(through) {
			upTo = append(upTo, byTick[at][0])
		}
	}
	c.t.Logf("schedule of %s: %d runs created for %s..%s, one per %v, no time missing or doubled; %d of them due by %s",
		name, len(ticks), ticks[0].Format("15:04:05"), ticks[len(ticks)-1].Format("15:04:05"), every, len(upTo), through.Format("15:04:05"))
	return upTo
}

// gridProblems lists the scheduled times with other than one run, and the
// gaps between consecutive times that are not every.
func gridProblems(byTick map[time.Time][]uuid.UUID, every time.Duration) []string {
	var problems []string
	ticks := slices.SortedFunc(maps.Keys(byTick), time.Time.Compare)
	for i, at := range ticks {
		if n := len(byTick[at]); n != 1 {
			problems = append(problems, fmt.Sprintf("%s has %d runs", at.Format(time.RFC3339Nano), n))
		}
		if i > 0 && at.Sub(ticks[i-1]) != every {
			problems = append(problems, fmt.Sprintf("%v between runs at %s and %s", at.Sub(ticks[i-1]), ticks[i-1].Format(time.RFC3339Nano), at.Format(time.RFC3339Nano)))
		}
	}
	return problems
}
