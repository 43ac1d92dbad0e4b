package domain

import (
	"bytes"
	"encoding/json"
	"sync"
	"unicode/utf8"

	"github.com/google/uuid"
)

// SplitLeading cuts a document as PostgreSQL prints jsonb (keys by length,
// then bytewise, each followed by ": " and separated by ", "), whose first
// key is key and holds an object, into that object and the document without
// it. It reports false for any other shape.
func SplitLeading(data []byte, key string) (value, rest []byte, ok bool) {
	prefix := `{"` + key + `": {`
	if len(data) < len(prefix) || string(data[:len(prefix)]) != prefix {
		return nil, nil, false
	}
	start := len(prefix) - 1
	end := objectEnd(data, start)
	if end < 0 {
		return nil, nil, false
	}
	switch {
	case end+2 <= len(data) && string(data[end:end+2]) == ", ":
		rest = make([]byte, 0, len(data)-end-1)
		rest = append(append(rest, '{'), data[end+2:]...)
	case string(data[end:]) == "}":
		rest = []byte("{}")
	default:
		return nil, nil, false
	}
	return data[start:end], rest, true
}

// objectEnd returns the index just after the object that starts at
// data[start], or -1.
func objectEnd(data []byte, start int) int {
	depth, inString := 0, false
	for i := start; i < len(data); i++ {
		c := data[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}

// Flow specs are kept decoded by their stored JSON, up to flowSpecsMax of
// them, each at most flowSpecMaxBytes long.
const (
	flowSpecsMax     = 256
	flowSpecMaxBytes = 64 << 10
)

// flowSpecs holds decoded flow specs by their stored JSON. The runs of a
// deployment share one spec, and decoding it is most of the cost of reading
// a run's first event, which every worker that runs one of its tasks does.
type flowSpecs struct {
	mu    sync.Mutex
	specs map[string]FlowSpec
}

// decodeFlowRunCreated decodes a FlowRunCreated, taking its flow spec from
// the registry's when the same spec was decoded before. A spec so taken is
// shared with other runs' events, read-only like every event.
func (r *Registry) decodeFlowRunCreated(data []byte) (Event, error) {
	var e FlowRunCreated
	raw, rest, ok := SplitLeading(data, "flow")
	if !ok || len(raw) > flowSpecMaxBytes {
		if err := json.Unmarshal(data, &e); err != nil {
			return nil, err
		}
		return e, nil
	}
	if err := json.Unmarshal(rest, &e); err != nil {
		return nil, err
	}
	c := &r.flows
	c.mu.Lock()
	spec, ok := c.specs[string(raw)]
	c.mu.Unlock()
	if !ok {
		if err := json.Unmarshal(raw, &spec); err != nil {
			return nil, err
		}
		c.mu.Lock()
		if c.specs == nil || len(c.specs) >= flowSpecsMax {
			c.specs = map[string]FlowSpec{}
		}
		c.specs[string(raw)] = spec
		c.mu.Unlock()
	}
	e.Flow = spec
	return e, nil
}

// TaskRunIDs maps a run's task names to their task run ids. A run of 10,000
// tasks records 10,000 of them in its FlowRunCreated, and encoding/json
// took 40 to 70 ms to decode them (a text unmarshal through reflection per
// id), so they are read without it in the form PostgreSQL prints jsonb.
type TaskRunIDs map[string]uuid.UUID

// UnmarshalJSON reads the ids printed as jsonb prints them; any other form
// goes to encoding/json.
func (m *TaskRunIDs) UnmarshalJSON(data []byte) error {
	if ids, ok := taskRunIDs(data); ok {
		*m = ids
		return nil
	}
	var plain map[string]uuid.UUID
	if err := json.Unmarshal(data, &plain); err != nil {
		return err
	}
	*m = plain
	return nil
}

// taskRunIDs reads {"name": "id", ...} with ": " after each key and ", "
// between members, keys without escapes and ids in their 36-character form.
func taskRunIDs(data []byte) (TaskRunIDs, bool) {
	if len(data) < 2 || data[0] != '{' || data[len(data)-1] != '}' {
		return nil, false
	}
	body := data[1 : len(data)-1]
	ids := make(TaskRunIDs, bytes.Count(body, []byte(`": "`)))
	for len(body) > 0 {
		if body[0] != '"' {
			return nil, false
		}
		n := bytes.IndexByte(body[1:], '"')
		if n < 0 {
			return nil, false
		}
		key := body[1 : 1+n]
		if bytes.IndexByte(key, '\\') >= 0 || !utf8.Valid(key) {
			return nil, false // escaped or invalid: the decoder's rules apply
		}
		body = body[1+n+1:]
		if len(body) < 3+36+1 || string(body[:3]) != `: "` || body[3+36] != '"' {
			return nil, false
		}
		id, err := uuid.ParseBytes(body[3 : 3+36])
		if err != nil {
			return nil, false
		}
		ids[string(key)] = id
		body = body[3+36+1:]
		if len(body) > 0 {
			if len(body) < 2 || string(body[:2]) != ", " {
				return nil, false
			}
			body = body[2:]
			if len(body) == 0 {
				return nil, false
			}
		}
	}
	return ids, true
}
