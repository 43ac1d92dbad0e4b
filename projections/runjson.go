package projections

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Listing runs is the API's busiest read, and encoding/json's reflection
// and re-compaction of raw JSON cost more than the query itself. These
// appenders write the same document by hand; a test checks them against
// encoding/json on many runs.

// appendJSON appends the page as a JSON document and a newline, each item
// by item.
func (p Page[T]) appendJSON(b []byte, item func(*T, []byte) []byte) []byte {
	b = append(b, `{"items":[`...)
	for i := range p.Items {
		if i > 0 {
			b = append(b, ',')
		}
		b = item(&p.Items[i], b)
	}
	b = append(b, `],"next_cursor":`...)
	if p.NextCursor == nil {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, *p.NextCursor)
	}
	return append(b, "}\n"...)
}

// AppendRunPageJSON appends a page of flow runs as the API's JSON document,
// followed by a newline.
func AppendRunPageJSON(b []byte, p Page[FlowRun]) []byte {
	return p.appendJSON(b, (*FlowRun).AppendJSON)
}

// AppendJSON appends the run as JSON.
func (f *FlowRun) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONUUID(b, f.ID)
	b = append(b, `,"name":`...)
	b = appendJSONString(b, f.Name)
	b = append(b, `,"flow_name":`...)
	b = appendJSONString(b, f.FlowName)
	b = append(b, `,"deployment_id":`...)
	b = appendJSONUUID(b, f.DeploymentID)
	b = append(b, `,"deployment_name":`...)
	b = appendJSONString(b, f.DeploymentName)
	b = append(b, `,"deployment_version":`...)
	b = strconv.AppendInt(b, int64(f.DeploymentVersion), 10)
	b = append(b, `,"work_queue":`...)
	b = appendJSONString(b, f.WorkQueue)
	b = append(b, `,"tags":`...)
	if f.Tags == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, t := range f.Tags {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, t)
		}
		b = append(b, ']')
	}
	b = append(b, `,"parameters":`...)
	b = appendJSONRaw(b, f.Parameters)
	b = append(b, `,"state":{"type":`...)
	b = appendJSONString(b, string(f.State.Type))
	b = append(b, `,"name":`...)
	b = appendJSONString(b, f.State.Name)
	b = append(b, `,"timestamp":`...)
	b = appendJSONTime(b, f.State.Timestamp)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, f.State.Message)
	b = append(b, `},"scheduled_at":`...)
	b = appendJSONTime(b, f.ScheduledAt)
	b = append(b, `,"started_at":`...)
	b = appendJSONTimePtr(b, f.StartedAt)
	b = append(b, `,"ended_at":`...)
	b = appendJSONTimePtr(b, f.EndedAt)
	b = append(b, `,"run_count":`...)
	b = strconv.AppendInt(b, int64(f.RunCount), 10)
	b = append(b, `,"parent_task_run_id":`...)
	b = appendJSONUUIDPtr(b, f.ParentTaskRunID)
	b = append(b, `,"parent_flow_run_id":`...)
	b = appendJSONUUIDPtr(b, f.ParentFlowRunID)
	b = append(b, `,"auto_scheduled":`...)
	b = strconv.AppendBool(b, f.AutoScheduled)
	b = append(b, `,"result":`...)
	b = appendJSONRaw(b, f.Result)
	b = append(b, `,"task_count":`...)
	b = strconv.AppendInt(b, int64(f.TaskCount), 10)
	b = append(b, `,"created_at":`...)
	b = appendJSONTime(b, f.CreatedAt)
	b = append(b, `,"updated_at":`...)
	b = appendJSONTime(b, f.UpdatedAt)
	if len(f.TaskRuns) > 0 {
		b = append(b, `,"task_runs":`...)
		b = appendJSONValue(b, f.TaskRuns)
	}
	return append(b, '}')
}

// appendJSONString appends s quoted. Plain printable ASCII, nearly every
// name, tag and state, is copied as it is; anything else goes through
// encoding/json so escaping stays exactly the same.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return appendJSONValue(b, s)
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

// appendJSONRaw appends stored JSON (from a jsonb column, so already valid)
// as it is, or null.
func appendJSONRaw(b []byte, m json.RawMessage) []byte {
	if len(m) == 0 {
		return append(b, "null"...)
	}
	return append(b, m...)
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

func appendJSONUUIDPtr(b []byte, id *uuid.UUID) []byte {
	if id == nil {
		return append(b, "null"...)
	}
	return appendJSONUUID(b, *id)
}

func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

func appendJSONTimePtr(b []byte, t *time.Time) []byte {
	if t == nil {
		return append(b, "null"...)
	}
	return appendJSONTime(b, *t)
}
