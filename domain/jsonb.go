package domain

import (
	"encoding/json"
	"sync"
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
