package projections

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
)

// copyBuf writes rows in PostgreSQL's binary COPY format. Replay writes
// millions of rows; encoding them here, without an interface value per
// column, keeps the client from being the bottleneck.
type copyBuf struct{ b []byte }

// pgEpochMicros is 2000-01-01T00:00:00Z in Unix microseconds: binary
// timestamps count from there.
const pgEpochMicros = 946684800 * 1_000_000

const textOID = 25

func (c *copyBuf) header() {
	c.b = append(c.b, "PGCOPY\n\xff\r\n\x00"...)
	c.b = binary.BigEndian.AppendUint32(c.b, 0) // flags
	c.b = binary.BigEndian.AppendUint32(c.b, 0) // header extension
}

func (c *copyBuf) trailer()   { c.b = binary.BigEndian.AppendUint16(c.b, 0xffff) }
func (c *copyBuf) row(n int)  { c.b = binary.BigEndian.AppendUint16(c.b, uint16(n)) }
func (c *copyBuf) null()      { c.b = binary.BigEndian.AppendUint32(c.b, 0xffffffff) }
func (c *copyBuf) size(n int) { c.b = binary.BigEndian.AppendUint32(c.b, uint32(n)) }

func (c *copyBuf) uuid(u uuid.UUID) {
	c.size(16)
	c.b = append(c.b, u[:]...)
}

func (c *copyBuf) nullUUID(u *uuid.UUID) {
	if u == nil {
		c.null()
		return
	}
	c.uuid(*u)
}

func (c *copyBuf) int8(v int64) {
	c.size(8)
	c.b = binary.BigEndian.AppendUint64(c.b, uint64(v))
}

func (c *copyBuf) int4(v int) {
	c.size(4)
	c.b = binary.BigEndian.AppendUint32(c.b, uint32(int32(v)))
}

func (c *copyBuf) nullInt4(v *int) {
	if v == nil {
		c.null()
		return
	}
	c.int4(*v)
}

func (c *copyBuf) bool(v bool) {
	c.size(1)
	if v {
		c.b = append(c.b, 1)
	} else {
		c.b = append(c.b, 0)
	}
}

func (c *copyBuf) text(s string) {
	c.size(len(s))
	c.b = append(c.b, s...)
}

func (c *copyBuf) nullText(s *string) {
	if s == nil {
		c.null()
		return
	}
	c.text(*s)
}

// jsonb writes a JSON document; empty raw is NULL.
func (c *copyBuf) jsonb(raw []byte) {
	if len(raw) == 0 {
		c.null()
		return
	}
	c.size(len(raw) + 1)
	c.b = append(c.b, 1) // jsonb binary format version
	c.b = append(c.b, raw...)
}

func (c *copyBuf) timestamptz(t time.Time) {
	c.int8(t.UnixMicro() - pgEpochMicros)
}

func (c *copyBuf) nullTimestamptz(t *time.Time) {
	if t == nil {
		c.null()
		return
	}
	c.timestamptz(*t)
}

// textArray writes a one-dimensional text[]; nil is the empty array.
func (c *copyBuf) textArray(ss []string) {
	if len(ss) == 0 {
		c.size(12)
		c.b = binary.BigEndian.AppendUint32(c.b, 0) // dimensions
		c.b = binary.BigEndian.AppendUint32(c.b, 0) // no nulls
		c.b = binary.BigEndian.AppendUint32(c.b, textOID)
		return
	}
	n := 20
	for _, s := range ss {
		n += 4 + len(s)
	}
	c.size(n)
	c.b = binary.BigEndian.AppendUint32(c.b, 1) // dimensions
	c.b = binary.BigEndian.AppendUint32(c.b, 0) // no nulls
	c.b = binary.BigEndian.AppendUint32(c.b, textOID)
	c.b = binary.BigEndian.AppendUint32(c.b, uint32(len(ss)))
	c.b = binary.BigEndian.AppendUint32(c.b, 1) // lower bound
	for _, s := range ss {
		c.text(s)
	}
}

// copySource appends rows to the buffer and returns how many; 0 when
// there are no more.
type copySource func(*copyBuf) (int, error)

// copyReader is the body of one COPY FROM STDIN: rows from src, up to
// maxRows (0: no limit).
type copyReader struct {
	buf       copyBuf
	off       int
	src       copySource
	rows      int
	maxRows   int
	done      bool
	exhausted bool // src has no more rows
}

func (r *copyReader) Read(p []byte) (int, error) {
	for r.off == len(r.buf.b) {
		if r.done {
			return 0, io.EOF
		}
		r.buf.b, r.off = r.buf.b[:0], 0
		for len(r.buf.b) < 128<<10 {
			if r.maxRows > 0 && r.rows >= r.maxRows {
				r.buf.trailer()
				r.done = true
				break
			}
			n, err := r.src(&r.buf)
			if err != nil {
				return 0, err
			}
			if n == 0 {
				r.buf.trailer()
				r.done, r.exhausted = true, true
				break
			}
			r.rows += n
		}
	}
	n := copy(p, r.buf.b[r.off:])
	r.off += n
	return n, nil
}

// copyIn runs COPY table (columns) FROM STDIN in binary format on conn, in
// its own transaction, with at most maxRows rows (0: all) of src. It
// returns the rows stored and whether src is exhausted.
func copyIn(ctx context.Context, conn *pgconn.PgConn, table string, columns []string, src copySource, maxRows int) (int64, bool, error) {
	sql := fmt.Sprintf("COPY %s (%s) FROM STDIN WITH (FORMAT binary)", table, strings.Join(columns, ", "))
	r := &copyReader{src: src, maxRows: maxRows, buf: copyBuf{b: make([]byte, 0, 256<<10)}}
	r.buf.header()
	tag, err := conn.CopyFrom(ctx, r, sql)
	if err != nil {
		return 0, false, fmt.Errorf("copy into %s: %w", table, err)
	}
	return tag.RowsAffected(), r.exhausted, nil
}

// sliceSource returns a source that encodes the rows of a slice, a
// thousand at a time.
func sliceSource[T any](rows []T, encode func(*copyBuf, *T) error) copySource {
	i := 0
	return func(c *copyBuf) (int, error) {
		start := i
		for end := min(i+1000, len(rows)); i < end; i++ {
			if err := encode(c, &rows[i]); err != nil {
				return 0, err
			}
		}
		return i - start, nil
	}
}

// jsonOr encodes v, or is empty when n is 0: most rows have no outputs
// and no metrics, and Replay writes millions of rows.
func jsonOr(v any, n int, empty []byte) ([]byte, error) {
	if n == 0 {
		return empty, nil
	}
	return json.Marshal(v)
}

// Empty documents, shared: the encoders only copy them.
var (
	emptyObject = []byte("{}")
	emptyList   = []byte("[]")
)

// Binary row encoders: each writes the columns of its table descriptor
// (tables.go), in that order.

func (d *deploymentOut) encode(c *copyBuf) error {
	params, err1 := json.Marshal(nonNilMap(d.Parameters))
	flow, err2 := json.Marshal(d.Flow)
	spec, err3 := json.Marshal(d.Spec)
	var schedule []byte
	var err4 error
	if d.Schedule != nil {
		schedule, err4 = json.Marshal(d.Schedule)
	}
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return fmt.Errorf("deployment %s: encode: %w", d.ID, err)
	}
	c.row(len(deploymentsTable.columns))
	c.uuid(d.ID)
	c.text(d.Name)
	c.int4(d.Version)
	c.text(d.Description)
	c.text(d.WorkQueue)
	c.textArray(d.Tags)
	c.jsonb(params)
	c.jsonb(schedule)
	c.bool(d.Paused)
	c.jsonb(flow)
	c.jsonb(spec)
	c.timestamptz(d.CreatedAt)
	c.timestamptz(d.UpdatedAt)
	c.int8(d.StreamVersion)
	return nil
}

func (h *historyRow) encode(c *copyBuf) error {
	c.row(len(historyTable.columns))
	c.uuid(h.StreamID)
	c.int8(h.Version)
	c.text(h.StreamType)
	c.uuid(h.FlowRunID)
	c.int8(h.Position)
	c.int8(h.TransactionID)
	c.text(h.EventType)
	c.nullText(h.FromType)
	c.nullText(h.FromName)
	c.text(h.ToType)
	c.text(h.ToName)
	c.text(h.Message)
	c.text(h.Actor)
	c.text(h.Reason)
	c.timestamptz(h.At)
	return nil
}

func (r *flowRunOut) encode(c *copyBuf) error {
	params, err1 := json.Marshal(nonNilMap(r.Parameters))
	metrics, err2 := jsonOr(r.Metrics, len(r.Metrics), emptyObject)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("flow run %s: encode: %w", r.ID, err)
	}
	c.row(len(flowRunsTable.columns))
	c.uuid(r.ID)
	c.text(r.Name)
	c.text(r.FlowName)
	c.uuid(r.DeploymentID)
	c.text(r.DeploymentName)
	c.int4(r.DeploymentVersion)
	c.text(r.WorkQueue)
	c.textArray(r.Tags)
	c.jsonb(params)
	c.text(r.StateType)
	c.text(r.StateName)
	c.timestamptz(r.StateTimestamp)
	c.text(r.StateMessage)
	c.timestamptz(r.ScheduledAt)
	c.nullTimestamptz(r.StartedAt)
	c.nullTimestamptz(r.EndedAt)
	c.int4(r.RunCount)
	c.nullUUID(r.ParentTaskRunID)
	c.nullUUID(r.ParentFlowRunID)
	c.bool(r.AutoScheduled)
	c.jsonb(r.Result)
	c.jsonb(metrics)
	c.int4(r.TaskCount)
	c.timestamptz(r.CreatedAt)
	c.timestamptz(r.UpdatedAt)
	c.int8(r.StreamVersion)
	return nil
}

func (t *taskRunOut) encode(c *copyBuf, task []byte) error {
	outputs, err1 := jsonOr(t.Outputs, len(t.Outputs), emptyList)
	metrics, err2 := jsonOr(t.Metrics, len(t.Metrics), emptyObject)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("task run %s: encode: %w", t.ID, err)
	}
	c.row(len(taskRunsTable.columns))
	c.uuid(t.ID)
	c.uuid(t.FlowRunID)
	c.text(t.TaskName)
	c.text(t.Kind)
	c.textArray(t.DependsOn)
	c.textArray(t.Tags)
	c.jsonb(task)
	c.text(t.StateType)
	c.text(t.StateName)
	c.timestamptz(t.StateTimestamp)
	c.text(t.StateMessage)
	c.int4(t.RunCount)
	c.nullTimestamptz(t.StartedAt)
	c.nullTimestamptz(t.EndedAt)
	c.nullTimestamptz(t.RetryAt)
	c.jsonb(t.Result)
	c.jsonb(outputs)
	c.jsonb(metrics)
	c.nullText(t.Error)
	c.nullInt4(t.ExitCode)
	c.nullText(t.CacheKey)
	c.nullUUID(t.ChildFlowRunID)
	c.int8(t.CreatedPos)
	c.timestamptz(t.CreatedAt)
	c.timestamptz(t.UpdatedAt)
	c.int8(t.StreamVersion)
	return nil
}

func (a *attemptRow) encode(c *copyBuf) error {
	c.row(len(attemptsTable.columns))
	c.uuid(a.TaskRunID)
	c.int4(a.Attempt)
	c.uuid(a.FlowRunID)
	c.text(a.Worker)
	c.nullTimestamptz(a.StartedAt)
	c.nullTimestamptz(a.EndedAt)
	c.text(a.Outcome)
	c.nullText(a.Error)
	c.nullInt4(a.ExitCode)
	return nil
}
