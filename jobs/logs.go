package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/eventstore"
)

// LogsChannel is the NOTIFY channel on which a worker announces stored log
// lines; the payload is the flow run id. Readers follow a run's logs by
// listening here and reading with ReadLogs after the last id they saw.
const LogsChannel = "ordo_logs"

// Log streams of a task run.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
	StreamSystem = "system" // the worker's own lines about an attempt
)

// maxLogLine is the longest stored line; longer lines are split.
const maxLogLine = 64 << 10

// DefaultMaxLogBytes is the output of one task attempt that is stored by
// default (WorkerOptions.MaxLogBytes).
const DefaultMaxLogBytes = 10 << 20

// LogLine is one stored line of a task run's log.
type LogLine struct {
	ID        int64     `json:"id"`
	TaskRunID uuid.UUID `json:"task_run_id"`
	FlowRunID uuid.UUID `json:"flow_run_id"`
	Attempt   int       `json:"attempt"`
	Timestamp time.Time `json:"timestamp"`
	Stream    string    `json:"stream"`
	Level     string    `json:"level,omitempty"`
	Message   string    `json:"message"`
}

// ReadLogs returns up to limit lines of a flow run's logs with an id above
// afterID, in order.
func ReadLogs(ctx context.Context, q eventstore.Querier, flowRunID uuid.UUID, afterID int64, limit int) ([]LogLine, error) {
	rows, err := q.Query(ctx, `
SELECT id, task_run_id, flow_run_id, attempt, ts, stream, coalesce(level, ''), line
FROM task_run_logs WHERE flow_run_id = $1 AND id > $2 ORDER BY id LIMIT $3`, flowRunID, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("read logs: %w", err)
	}
	lines, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (LogLine, error) {
		var l LogLine
		err := r.Scan(&l.ID, &l.TaskRunID, &l.FlowRunID, &l.Attempt, &l.Timestamp, &l.Stream, &l.Level, &l.Message)
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("read logs: %w", err)
	}
	return lines, nil
}

// logWriter stores log lines in batches: every flushInterval, or sooner
// when maxBatch lines wait, with COPY, and then notifies LogsChannel once
// per flow run in the batch.
type logWriter struct {
	pool          *pgxpool.Pool
	logger        *slog.Logger
	flushInterval time.Duration
	maxBatch      int
	// maxTaskBytes is the output of one attempt that is stored; the rest
	// is dropped.
	maxTaskBytes int64

	mu      sync.Mutex
	pending []LogLine
	syncs   []chan struct{}
	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{}
}

// newLogWriter returns a log writer that stores up to maxTaskBytes of each
// attempt's output: 0 means DefaultMaxLogBytes, a negative value no cap.
func newLogWriter(pool *pgxpool.Pool, logger *slog.Logger, maxTaskBytes int64) *logWriter {
	switch {
	case maxTaskBytes == 0:
		maxTaskBytes = DefaultMaxLogBytes
	case maxTaskBytes < 0:
		maxTaskBytes = math.MaxInt64
	}
	return &logWriter{
		pool: pool, logger: logger,
		flushInterval: 100 * time.Millisecond, maxBatch: 500, maxTaskBytes: maxTaskBytes,
		kick: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{}),
	}
}

// write queues a line; it never blocks on the database.
func (w *logWriter) write(l LogLine) {
	l.Message = cleanLine(l.Message)
	w.mu.Lock()
	for len(l.Message) > maxLogLine {
		cut := maxLogLine
		for cut > 0 && !utf8.RuneStart(l.Message[cut]) {
			cut--
		}
		part := l
		part.Message = l.Message[:cut]
		w.pending = append(w.pending, part)
		l.Message = l.Message[cut:]
	}
	w.pending = append(w.pending, l)
	full := len(w.pending) >= w.maxBatch
	w.mu.Unlock()
	if full {
		w.poke()
	}
}

// sync returns once every line written before it is stored (or ctx ends).
func (w *logWriter) sync(ctx context.Context) {
	ch := make(chan struct{})
	w.mu.Lock()
	w.syncs = append(w.syncs, ch)
	w.mu.Unlock()
	w.poke()
	select {
	case <-ch:
	case <-ctx.Done():
	case <-w.stopped:
	}
}

func (w *logWriter) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *logWriter) run() {
	defer close(w.stopped)
	ticker := time.NewTicker(w.flushInterval)
	defer ticker.Stop()
	for {
		stop := false
		select {
		case <-w.done:
			stop = true
		case <-w.kick:
		case <-ticker.C:
		}
		w.flush()
		if stop {
			return
		}
	}
}

func (w *logWriter) stop() {
	close(w.done)
	<-w.stopped
}

func (w *logWriter) flush() {
	w.mu.Lock()
	lines, syncs := w.pending, w.syncs
	w.pending, w.syncs = nil, nil
	w.mu.Unlock()
	defer func() {
		for _, ch := range syncs {
			close(ch)
		}
	}()
	if len(lines) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := w.store(ctx, lines)
	if err == nil {
		return
	}
	w.mu.Lock()
	keep := transient(err) && len(w.pending)+len(lines) <= maxPendingLogLines
	if keep {
		// The database is unreachable for now: keep the lines, in order,
		// for the next flush.
		w.pending = append(lines, w.pending...)
	}
	w.mu.Unlock()
	if keep {
		w.logger.Warn("store task logs; keeping them to try again", "lines", len(lines), "err", err)
	} else {
		w.logger.Error("store task logs", "lines", len(lines), "err", err)
	}
}

// maxPendingLogLines bounds the lines kept in memory while the database is
// unreachable; beyond it, a failed batch is dropped.
const maxPendingLogLines = 100_000

func (w *logWriter) store(ctx context.Context, lines []LogLine) error {
	runs := map[uuid.UUID]bool{}
	var notify []string
	for _, l := range lines {
		if !runs[l.FlowRunID] {
			runs[l.FlowRunID] = true
			notify = append(notify, l.FlowRunID.String())
		}
	}
	return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"task_run_logs"},
			[]string{"task_run_id", "flow_run_id", "attempt", "ts", "stream", "level", "line"},
			pgx.CopyFromSlice(len(lines), func(i int) ([]any, error) {
				l := lines[i]
				var level *string
				if l.Level != "" {
					level = &l.Level
				}
				return []any{l.TaskRunID, l.FlowRunID, int32(l.Attempt), l.Timestamp, l.Stream, level, l.Message}, nil
			}))
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id`, LogsChannel, notify)
		return err
	})
}

// cleanLine makes a line storable as Postgres text: valid UTF-8 without NUL.
func cleanLine(s string) string {
	s = strings.TrimSuffix(strings.TrimSuffix(s, "\n"), "\r")
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	return s
}

// taskLog is where one attempt's lines go: the log writer, and a tail of the
// last lines for failure reports.
//
// The attempt's output (every stream but system) is stored up to the log
// writer's maxTaskBytes. Past it, the task runs on but its lines are
// dropped, only counted, and sync writes one system line that says how much
// was dropped. The tail still follows the output: a failure report shows
// the real last lines.
type taskLog struct {
	w    *logWriter
	base LogLine

	mu           sync.Mutex
	heading      *LogLine // written before the attempt's first line, if any
	tail         []string
	errTail      []string // the last lines on stderr, for a failure's message
	lines        int      // lines written
	outputBytes  int64    // bytes of output stored
	droppedLines int64
	droppedBytes int64
	reported     bool // the dropped output was reported
}

const logTailLines = 20

func (t *taskLog) line(stream, level, msg string) {
	size := int64(len(msg)) // as the task wrote it, newline included
	t.mu.Lock()
	keep := stream == StreamSystem
	if !keep && t.droppedLines == 0 && t.outputBytes+size <= t.w.maxTaskBytes {
		keep = true
		t.outputBytes += size
	}
	if keep {
		t.lines++
	} else {
		t.droppedLines++
		t.droppedBytes += size
	}
	if len(t.tail) == logTailLines {
		copy(t.tail, t.tail[1:])
		t.tail = t.tail[:logTailLines-1]
	}
	clean := cleanLine(msg)
	t.tail = append(t.tail, clean)
	if stream == StreamStderr && strings.TrimSpace(clean) != "" {
		if len(t.errTail) == errTailLines {
			copy(t.errTail, t.errTail[1:])
			t.errTail = t.errTail[:errTailLines-1]
		}
		t.errTail = append(t.errTail, lastBytes(strings.TrimSpace(clean), maxErrTail))
	}
	heading := t.heading
	t.heading = nil
	if heading != nil {
		t.lines++
		t.w.write(*heading) // under the lock: before any other line
	}
	t.mu.Unlock()
	if keep {
		l := t.base
		l.Timestamp, l.Stream, l.Level, l.Message = time.Now(), stream, level, msg
		t.w.write(l)
	}
}

// sync returns once every line of the attempt is stored; at once when it
// wrote none. Called when the attempt's output has ended, it first reports
// the output dropped over the cap, if any.
func (t *taskLog) sync(ctx context.Context) {
	t.mu.Lock()
	report := t.droppedLines > 0 && !t.reported
	t.reported = t.reported || report
	lines, bytes := t.droppedLines, t.droppedBytes
	t.mu.Unlock()
	if report {
		t.line(StreamSystem, "WARN", fmt.Sprintf(
			"log volume cap reached: %d more lines (%d bytes) of output were dropped; an attempt stores at most %d bytes of output",
			lines, bytes, t.w.maxTaskBytes))
	}
	t.mu.Lock()
	n := t.lines
	t.mu.Unlock()
	if n > 0 {
		t.w.sync(ctx)
	}
}

// silent reports whether the attempt has written no line yet, stored or
// dropped.
func (t *taskLog) silent() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lines == 0 && t.droppedLines == 0
}

func (t *taskLog) system(format string, args ...any) {
	t.line(StreamSystem, "INFO", fmt.Sprintf(format, args...))
}

// head sets the system line that opens the attempt's log, stamped now and
// written before its first line. An attempt that writes nothing (a Go
// handler that logs nothing and succeeds) leaves no line at all: its start,
// worker and attempt are in its TaskRunStarted event, and a row per quick
// task was about a tenth of the cost of running one.
func (t *taskLog) head(format string, args ...any) {
	l := t.base
	l.Timestamp, l.Stream, l.Level, l.Message = time.Now(), StreamSystem, "INFO", fmt.Sprintf(format, args...)
	t.mu.Lock()
	t.heading = &l
	t.mu.Unlock()
}

// Bounds of the stderr lines a failure's message quotes.
const (
	errTailLines = 5
	maxErrTail   = 1 << 10
)

// stderrTail is the last non-blank lines the attempt wrote on stderr, for
// the message of its failure: at most errTailLines lines and maxErrTail
// bytes, joined with " | " so that the message stays one line in tables.
// Lines cut to fit start with "…". Empty when it wrote nothing there.
func (t *taskLog) stderrTail() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return lastBytes(strings.Join(t.errTail, " | "), maxErrTail)
}

// lastBytes is the end of s in at most n bytes, cut at a rune boundary and
// marked with a leading "…" when cut.
func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := len(s) - (n - len(mark))
	for cut < len(s) && !utf8.RuneStart(s[cut]) {
		cut++
	}
	return mark + s[cut:]
}

func (t *taskLog) lastLines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.tail...)
}

// slogHandler turns a Go handler's slog records into log lines of its task
// run, formatted like slog's text handler without time and level (those are
// columns).
type slogHandler struct {
	log   *taskLog
	attrs []slog.Attr
	group string
}

func (h *slogHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *slogHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	add := func(a slog.Attr) bool {
		if a.Equal(slog.Attr{}) {
			return true
		}
		key := a.Key
		if h.group != "" {
			key = h.group + "." + key
		}
		fmt.Fprintf(&b, " %s=%v", key, a.Value.Resolve())
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	h.log.line(StreamStdout, r.Level.String(), b.String())
	return nil
}

func (h *slogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return &c
}

func (h *slogHandler) WithGroup(name string) slog.Handler {
	c := *h
	if c.group != "" {
		name = c.group + "." + name
	}
	c.group = name
	return &c
}

// slogLogger returns a logger whose records become lines of the task log.
func slogLogger(l *taskLog) *slog.Logger { return slog.New(&slogHandler{log: l}) }
