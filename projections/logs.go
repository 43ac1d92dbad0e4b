package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
)

// LogsChannel is the NOTIFY channel on which workers announce stored log
// lines, with the flow run id as payload (jobs.LogsChannel; the same name,
// since projections must not import jobs).
const LogsChannel = "ordo_logs"

// Log page sizes.
const (
	DefaultLogPageSize = 500
	MaxLogPageSize     = 5000
)

// LogLine is one line of a task run's log as the API shows it. ID orders
// the lines of a run; pass the last one seen as after.
type LogLine struct {
	ID        int64     `json:"id"`
	Timestamp time.Time `json:"timestamp"`
	TaskRunID uuid.UUID `json:"task_run_id"`
	TaskName  string    `json:"task_name"`
	Attempt   int       `json:"attempt"`
	Stream    string    `json:"stream"` // stdout, stderr or system
	Level     *string   `json:"level"`  // for Go handler and system lines; null for process output
	Message   string    `json:"message"`
}

// LogFilter selects lines of a run's log, in order.
type LogFilter struct {
	Task  string // a task name or task run id of the run; "" for all
	After int64  // lines after this id
	Limit int    // 1..5000; 0 means 500
}

// RunLogs returns a page of a flow run's log lines. NextCursor is set when
// more lines are stored now; a client following a live run passes the last
// line's id as after (or uses follow).
func (r *Reader) RunLogs(ctx context.Context, runID uuid.UUID, f LogFilter) (Page[LogLine], error) {
	limit := f.Limit
	switch {
	case limit == 0:
		limit = DefaultLogPageSize
	case limit < 0 || limit > MaxLogPageSize:
		return Page[LogLine]{}, domain.Invalid("limit", "must be between 1 and %d, got %d", MaxLogPageSize, limit)
	}
	if f.After < 0 {
		return Page[LogLine]{}, domain.Invalid("after", "must not be negative, got %d", f.After)
	}
	if _, err := r.RunState(ctx, runID); err != nil {
		return Page[LogLine]{}, err
	}
	var task *uuid.UUID
	if f.Task != "" {
		id, err := r.taskOfRun(ctx, runID, f.Task)
		if err != nil {
			return Page[LogLine]{}, err
		}
		task = &id
	}
	rows, err := r.pool.Query(ctx, `
SELECT l.id, l.ts, l.task_run_id, coalesce(t.task_name, ''), l.attempt, l.stream, l.level, l.line
FROM task_run_logs l
LEFT JOIN task_runs t ON t.id = l.task_run_id
WHERE l.flow_run_id = $1 AND l.id > $2 AND ($3::uuid IS NULL OR l.task_run_id = $3)
ORDER BY l.id
LIMIT $4`, runID, f.After, task, limit+1)
	if err != nil {
		return Page[LogLine]{}, fmt.Errorf("read logs: %w", err)
	}
	lines, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (LogLine, error) {
		var l LogLine
		err := row.Scan(&l.ID, &l.Timestamp, &l.TaskRunID, &l.TaskName, &l.Attempt, &l.Stream, &l.Level, &l.Message)
		return l, err
	})
	if err != nil {
		return Page[LogLine]{}, fmt.Errorf("read logs: %w", err)
	}
	page := Page[LogLine]{Items: nonNil(lines)}
	if len(lines) > limit {
		page.Items = lines[:limit]
		c := fmt.Sprint(lines[limit-1].ID)
		page.NextCursor = &c
	}
	return page, nil
}

// taskOfRun resolves a task name or task run id of a run.
func (r *Reader) taskOfRun(ctx context.Context, runID uuid.UUID, task string) (uuid.UUID, error) {
	var id uuid.UUID
	var err error
	if tid, perr := uuid.Parse(task); perr == nil {
		err = r.pool.QueryRow(ctx, `SELECT id FROM task_runs WHERE id = $1 AND flow_run_id = $2`, tid, runID).Scan(&id)
	} else {
		err = r.pool.QueryRow(ctx, `SELECT id FROM task_runs WHERE flow_run_id = $1 AND task_name = $2`, runID, task).Scan(&id)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, domain.Invalid("task", "flow run %s has no task %q", runID, task)
	}
	if err != nil {
		return uuid.Nil, fmt.Errorf("find task %q: %w", task, err)
	}
	return id, nil
}

// RunState returns a flow run's current state, from the read model.
func (r *Reader) RunState(ctx context.Context, runID uuid.UUID) (State, error) {
	var s State
	var t string
	err := r.pool.QueryRow(ctx, `SELECT state_type, state_name, state_timestamp, state_message FROM flow_runs WHERE id = $1`, runID).
		Scan(&t, &s.Name, &s.Timestamp, &s.Message)
	if errors.Is(err, pgx.ErrNoRows) {
		return State{}, domain.Errorf(domain.CodeNotFound, "flow run %s not found", runID)
	}
	if err != nil {
		return State{}, fmt.Errorf("get run state: %w", err)
	}
	s.Type = domain.StateType(t)
	return s, nil
}

// LogNotify returns a channel that receives a value when new log lines of
// the run may have been stored, and a function that stops the
// notifications. Notifications come from LISTEN on LogsChannel over one
// connection shared by every follower of the process, open while anyone
// follows; they can be lost (a reconnect), so followers also poll.
func (r *Reader) LogNotify(runID uuid.UUID) (<-chan struct{}, func()) {
	return r.logs.subscribe(runID)
}

// logListener fans NOTIFY ordo_logs out to the followers of each run.
type logListener struct {
	r    *Reader
	log  *slog.Logger
	mu   sync.Mutex
	subs map[uuid.UUID]map[chan struct{}]struct{}
	stop context.CancelFunc // of the listening goroutine; nil when none runs
	done chan struct{}
}

func (l *logListener) subscribe(runID uuid.UUID) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.subs == nil {
		l.subs = map[uuid.UUID]map[chan struct{}]struct{}{}
	}
	if l.subs[runID] == nil {
		l.subs[runID] = map[chan struct{}]struct{}{}
	}
	l.subs[runID][ch] = struct{}{}
	if l.stop == nil {
		ctx, cancel := context.WithCancel(context.Background())
		l.stop, l.done = cancel, make(chan struct{})
		go l.listen(ctx, l.done)
	}
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			delete(l.subs[runID], ch)
			if len(l.subs[runID]) == 0 {
				delete(l.subs, runID)
			}
			if len(l.subs) == 0 && l.stop != nil {
				l.stop()
				l.stop = nil
			}
		})
	}
}

func (l *logListener) notify(payload string) {
	id, err := uuid.Parse(strings.TrimSpace(payload))
	l.mu.Lock()
	defer l.mu.Unlock()
	for runID, chans := range l.subs {
		if err == nil && runID != id {
			continue
		}
		for ch := range chans {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// listen holds a connection of its own (not one of the pool's, which must
// not keep listening) until ctx ends, reconnecting after failures.
func (l *logListener) listen(ctx context.Context, done chan struct{}) {
	defer close(done)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := l.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		l.log.Debug("log listener reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (l *logListener) listenOnce(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, l.r.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN `+LogsChannel); err != nil {
		return err
	}
	l.notify("") // lines may have come while no one listened
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		l.notify(n.Payload)
	}
}
