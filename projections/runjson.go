package projections

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Listing runs is the API's busiest read, and scanning rows into FlowRuns
// and encoding them with encoding/json cost more than the query itself.
// These appenders write the document of GET /runs straight from the rows
// in PostgreSQL's binary format (Reader.AppendRunListJSON); a test checks
// the result against encoding/json of RunList's page.

// appendJSONString appends s quoted. Plain printable ASCII, nearly every
// name, tag and state, is copied as it is; anything else goes through
// encoding/json so escaping stays exactly the same.
func appendJSONString[S ~string | ~[]byte](b []byte, s S) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return appendJSONValue(b, string(s))
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendJSONValue(b []byte, v any) []byte {
	out, err := json.Marshal(v)
	if err != nil {
		// Only unsupported types fail, and none are passed here.
		panic(err)
	}
	return append(b, out...)
}

func appendJSONUUID(b []byte, id uuid.UUID) []byte {
	var s [36]byte
	b = append(b, '"')
	b = append(b, encodeUUID(&s, id)...)
	return append(b, '"')
}

func encodeUUID(dst *[36]byte, id uuid.UUID) []byte {
	const hex = "0123456789abcdef"
	j := 0
	for i, c := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst[j] = '-'
			j++
		}
		dst[j], dst[j+1] = hex[c>>4], hex[c&0xf]
		j += 2
	}
	return dst[:]
}

func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// binaryRunRow writes rows of flowRunColumnsSelect, received in PostgreSQL's
// binary format, as JSON: the FlowRun RunList would scan from the row, as
// the API shows it. It keeps the last row's sort key, for
// the page's cursor.
type binaryRunRow struct {
	scheduledAt time.Time
	id          uuid.UUID
}

// flowRunShownColumns is how many columns flowRunColumnsSelect reads.
var flowRunShownColumns = len(flowRunsTable.names("stream_version"))

// errBinaryColumn is a column whose binary value is not of the size or
// shape its type has; it means the query and this encoder disagree.
var errBinaryColumn = errors.New("unexpected binary value")

func (r *binaryRunRow) appendJSON(b []byte, v [][]byte) ([]byte, error) {
	if len(v) != flowRunShownColumns {
		return b, fmt.Errorf("flow run row of %d columns: %w", len(v), errBinaryColumn)
	}
	e := binaryJSON{b: b}
	e.key(`{"id":`).uuid(v[0])
	e.key(`,"name":`).text(v[1])
	e.key(`,"flow_name":`).text(v[2])
	e.key(`,"deployment_id":`).uuid(v[3])
	e.key(`,"deployment_name":`).text(v[4])
	e.key(`,"deployment_version":`).int4(v[5])
	e.key(`,"work_queue":`).text(v[6])
	e.key(`,"tags":`).textArray(v[7])
	e.key(`,"parameters":`).jsonb(v[8])
	e.key(`,"state":{"type":`).text(v[9])
	e.key(`,"name":`).text(v[10])
	e.key(`,"timestamp":`).time(v[11])
	e.key(`,"message":`).text(v[12])
	e.key(`},"scheduled_at":`).time(v[13])
	e.key(`,"started_at":`).time(v[14])
	e.key(`,"ended_at":`).time(v[15])
	e.key(`,"run_count":`).int4(v[16])
	e.key(`,"parent_task_run_id":`).uuid(v[17])
	e.key(`,"parent_flow_run_id":`).uuid(v[18])
	e.key(`,"auto_scheduled":`).bool(v[19])
	e.key(`,"result":`).jsonb(v[20])
	e.key(`,"metrics":`).jsonb(v[21])
	e.key(`,"task_count":`).int4(v[22])
	e.key(`,"created_at":`).time(v[23])
	e.key(`,"updated_at":`).time(v[24])
	e.key(`}`)
	if e.err != nil {
		return b, e.err
	}
	r.id = uuid.UUID(v[0])
	r.scheduledAt, _ = binaryTime(v[13])
	return e.b, nil
}

// binaryJSON appends column values in PostgreSQL's binary format as JSON,
// each as encoding/json would write the Go value pgx scans it into; NULL
// is null. The first malformed value sets err.
type binaryJSON struct {
	b    []byte
	err  error
	date dateCache
}

func (e *binaryJSON) key(k string) *binaryJSON {
	e.b = append(e.b, k...)
	return e
}

func (e *binaryJSON) fail(typ string, v []byte) {
	if e.err == nil {
		e.err = fmt.Errorf("%s of %d bytes: %w", typ, len(v), errBinaryColumn)
	}
}

func (e *binaryJSON) null(v []byte) bool {
	if v == nil {
		e.b = append(e.b, "null"...)
		return true
	}
	return false
}

func (e *binaryJSON) uuid(v []byte) {
	if e.null(v) {
		return
	}
	if len(v) != 16 {
		e.fail("uuid", v)
		return
	}
	e.b = appendJSONUUID(e.b, uuid.UUID(v))
}

func (e *binaryJSON) text(v []byte) {
	if e.null(v) {
		return
	}
	e.b = appendJSONString(e.b, v)
}

func (e *binaryJSON) int4(v []byte) {
	if e.null(v) {
		return
	}
	if len(v) != 4 {
		e.fail("integer", v)
		return
	}
	e.b = strconv.AppendInt(e.b, int64(int32(binary.BigEndian.Uint32(v))), 10)
}

func (e *binaryJSON) bool(v []byte) {
	if e.null(v) {
		return
	}
	if len(v) != 1 {
		e.fail("boolean", v)
		return
	}
	e.b = strconv.AppendBool(e.b, v[0] != 0)
}

func (e *binaryJSON) time(v []byte) {
	if e.null(v) {
		return
	}
	t, ok := binaryTime(v)
	if !ok {
		e.fail("timestamptz", v)
		return
	}
	_, offset := t.Zone()
	e.b = e.date.appendRFC3339Micro(e.b, t.UnixMicro(), offset)
}

// dateCache holds the last date appendRFC3339Micro wrote: the times of a
// page are mostly of a few days, and the calendar is the costly part.
type dateCache struct {
	valid  bool
	days   int64 // since 1970-01-01, at offset
	offset int
	date   [10]byte // YYYY-MM-DD
}

// appendRFC3339Micro appends the instant unixMicro, seen at offset seconds
// east of UTC, quoted, exactly as appendJSONTime writes a time of
// microsecond precision: formatting many times is most of a page's
// encoding, and this does in integer arithmetic what time.AppendFormat
// does through the calendar. Years outside 0000-9999 go to AppendFormat.
func (c *dateCache) appendRFC3339Micro(b []byte, unixMicro int64, offset int) []byte {
	local := unixMicro + int64(offset)*1_000_000
	secs, micros := floorDiv(local, 1_000_000)
	days, sod := floorDiv(secs, 86_400)
	if !c.valid || c.days != days || c.offset != offset {
		if !c.fill(days, offset) {
			return appendJSONTime(b, time.UnixMicro(unixMicro).In(time.FixedZone("", offset)))
		}
	}
	h, mi, sec := int(sod/3600), int(sod/60%60), int(sod%60)
	b = append(b, '"')
	b = append(b, c.date[:]...)
	b = append(b, 'T', byte('0'+h/10), byte('0'+h%10), ':', byte('0'+mi/10), byte('0'+mi%10), ':', byte('0'+sec/10), byte('0'+sec%10))
	if micros != 0 {
		u := int(micros)
		b = append(b, '.', byte('0'+u/100000), byte('0'+u/10000%10), byte('0'+u/1000%10),
			byte('0'+u/100%10), byte('0'+u/10%10), byte('0'+u%10))
		for b[len(b)-1] == '0' {
			b = b[:len(b)-1]
		}
	}
	if offset == 0 {
		return append(b, 'Z', '"')
	}
	sign := byte('+')
	if offset < 0 {
		sign, offset = '-', -offset
	}
	oh, om := offset/3600, offset/60%60
	return append(b, sign, byte('0'+oh/10), byte('0'+oh%10), ':', byte('0'+om/10), byte('0'+om%10), '"')
}

// fill computes the date of days since 1970-01-01; it reports false for
// years outside 0000-9999, which RFC 3339 cannot write in four digits.
func (c *dateCache) fill(days int64, offset int) bool {
	// Days since 1970-01-01 to a civil date, counting in 400-year eras
	// that start on March 1 so that leap days come last.
	z := days + 719_468
	era, doe := floorDiv(z, 146_097)
	yoe := (doe - doe/1_460 + doe/36_524 - doe/146_096) / 365
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	day := doy - (153*mp+2)/5 + 1
	month := mp + 3
	if month > 12 {
		month -= 12
	}
	year := yoe + era*400
	if month <= 2 {
		year++
	}
	if year < 0 || year > 9999 {
		c.valid = false
		return false
	}
	y, mo, d := int(year), int(month), int(day)
	c.date = [10]byte{byte('0' + y/1000), byte('0' + y/100%10), byte('0' + y/10%10), byte('0' + y%10),
		'-', byte('0' + mo/10), byte('0' + mo%10), '-', byte('0' + d/10), byte('0' + d%10)}
	c.valid, c.days, c.offset = true, days, offset
	return true
}

// floorDiv divides rounding towards minus infinity, with a remainder that
// is never negative.
func floorDiv(a, b int64) (int64, int64) {
	q, r := a/b, a%b
	if r < 0 {
		q, r = q-1, r+b
	}
	return q, r
}

// binaryTime is a timestamptz: microseconds since 2000-01-01 UTC, as a
// time in the local zone, as pgx scans it. Infinities are refused.
func binaryTime(v []byte) (time.Time, bool) {
	const unixToY2K = 946_684_800 * 1_000_000
	if len(v) != 8 {
		return time.Time{}, false
	}
	us := int64(binary.BigEndian.Uint64(v))
	if us == math.MaxInt64 || us == math.MinInt64 {
		return time.Time{}, false
	}
	return time.UnixMicro(unixToY2K + us), true
}

// jsonb is a version byte, 1, and the JSON text, appended as
// encoding/json writes a json.RawMessage, so that a run's parameters and
// result read the same here as in every other response.
func (e *binaryJSON) jsonb(v []byte) {
	if e.null(v) {
		return
	}
	if len(v) < 2 || v[0] != 1 {
		e.fail("jsonb", v)
		return
	}
	e.b = appendCompactJSON(e.b, v[1:])
}

// appendCompactJSON appends the valid JSON text src without insignificant
// whitespace (PostgreSQL prints a space after each colon and comma) and
// with <, >, &, U+2028 and U+2029 escaped in strings, as encoding/json
// compacts a json.RawMessage.
func appendCompactJSON(b, src []byte) []byte {
	const hex = "0123456789abcdef"
	start, inString := 0, false
	for i := 0; i < len(src); i++ {
		c := src[i]
		if !inString {
			switch c {
			case '"':
				inString = true
			case ' ', '\t', '\n', '\r':
				b = append(b, src[start:i]...)
				start = i + 1
			}
			continue
		}
		switch {
		case c == '\\':
			i++ // the escaped character, which cannot end the string
		case c == '"':
			inString = false
		case c == '<' || c == '>' || c == '&':
			b = append(b, src[start:i]...)
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			start = i + 1
		case c == 0xE2 && i+2 < len(src) && src[i+1] == 0x80 && src[i+2]&^1 == 0xA8:
			b = append(b, src[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[src[i+2]&0xF])
			i += 2
			start = i + 1
		}
	}
	return append(b, src[start:]...)
}

// textArray is a one-dimensional text[] without NULLs: dimensions, a NULL
// flag and the element type, then each dimension's size and lower bound,
// then each element's length and bytes. An empty array has no dimension.
func (e *binaryJSON) textArray(v []byte) {
	if e.null(v) {
		return
	}
	if len(v) < 12 {
		e.fail("text[]", v)
		return
	}
	dims := binary.BigEndian.Uint32(v)
	if dims == 0 {
		e.b = append(e.b, "[]"...)
		return
	}
	if dims != 1 || len(v) < 20 {
		e.fail("text[]", v)
		return
	}
	n := int(binary.BigEndian.Uint32(v[12:]))
	rest := v[20:]
	e.b = append(e.b, '[')
	for i := range n {
		if len(rest) < 4 {
			e.fail("text[]", v)
			return
		}
		size := int32(binary.BigEndian.Uint32(rest))
		if size < 0 || int(size) > len(rest)-4 {
			e.fail("text[]", v)
			return
		}
		if i > 0 {
			e.b = append(e.b, ',')
		}
		e.b = appendJSONString(e.b, rest[4:4+size])
		rest = rest[4+size:]
	}
	e.b = append(e.b, ']')
}
