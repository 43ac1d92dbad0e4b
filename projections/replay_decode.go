package projections

import (
	"encoding/json"
	"fmt"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
)

// decoder decodes events, remembering small payloads and metadata it has
// seen: a log repeats them a lot ({"attempt": 1, "worker": "w1"}).
type decoder struct {
	reg    *domain.Registry
	events map[string]domain.Event
	metas  map[string]domain.Metadata
	tasks  map[string]domain.TaskSpec
	flows  map[string]domain.FlowSpec
}

const decodeCacheMax = 1 << 14

func newDecoder(reg *domain.Registry) *decoder {
	return &decoder{reg: reg, events: map[string]domain.Event{}, metas: map[string]domain.Metadata{}, tasks: map[string]domain.TaskSpec{}, flows: map[string]domain.FlowSpec{}}
}

func (d *decoder) decode(envs []domain.Envelope, metas [][]byte) error {
	var key []byte
	for i := range envs {
		e := &envs[i]
		raw := metas[i]
		m, ok := d.metas[string(raw)]
		if !ok {
			// decoded into a variable of its own: one whose address is
			// taken lives on the heap, an allocation per event
			var decoded domain.Metadata
			if err := json.Unmarshal(raw, &decoded); err != nil {
				return fmt.Errorf("replay: event %d: decode metadata: %w", e.Position, err)
			}
			if len(d.metas) >= decodeCacheMax {
				clear(d.metas)
			}
			d.metas[string(raw)] = decoded
			m = decoded
		}
		e.Metadata = m
		if d.creation(e) {
			continue
		}
		if len(e.Data) <= 96 {
			key = append(append(append(key[:0], e.Type...), 0), e.Data...)
			if ev, ok := d.events[string(key)]; ok && ev.StreamType() == e.StreamType {
				e.Event = ev
				continue
			}
		}
		if err := d.reg.DecodeEnvelope(e); err != nil {
			return fmt.Errorf("replay: event %d: %w", e.Position, err)
		}
		if len(e.Data) <= 96 {
			if len(d.events) >= decodeCacheMax {
				clear(d.events)
			}
			d.events[string(key)] = e.Event
		}
	}
	return nil
}

var (
	taskRunCreated = domain.TaskRunCreated{}.EventType()
	flowRunCreated = domain.FlowRunCreated{}.EventType()
)

// creation decodes the two big events of every run, TaskRunCreated and
// FlowRunCreated, decoding their task or flow spec, which the runs of a
// deployment share, once per distinct spec. It reports false, leaving e
// alone, when the payload does not have the expected shape.
func (d *decoder) creation(e *domain.Envelope) bool {
	switch {
	case e.Type == taskRunCreated && e.StreamType == domain.StreamTaskRun:
		raw, rest, ok := domain.SplitLeading(e.Data, "task")
		if !ok {
			return false
		}
		// Variables whose address a decoder takes live on the heap: the
		// fast paths keep to others.
		var ev domain.TaskRunCreated
		if id, ok := flowRunIDOnly(rest); ok {
			ev.FlowRunID = id
		} else {
			var decoded domain.TaskRunCreated
			if json.Unmarshal(rest, &decoded) != nil {
				return false
			}
			ev = decoded
		}
		task, ok := d.tasks[string(raw)]
		if !ok {
			var decoded domain.TaskSpec
			if json.Unmarshal(raw, &decoded) != nil {
				return false
			}
			if len(d.tasks) >= decodeCacheMax {
				clear(d.tasks)
			}
			d.tasks[string(raw)] = decoded
			task = decoded
		}
		ev.Task = task
		e.Event = ev
		return true
	case e.Type == flowRunCreated && e.StreamType == domain.StreamFlowRun:
		raw, rest, ok := domain.SplitLeading(e.Data, "flow")
		if !ok {
			return false
		}
		var ev domain.FlowRunCreated
		if json.Unmarshal(rest, &ev) != nil {
			return false
		}
		flow, ok := d.flows[string(raw)]
		if !ok {
			var decoded domain.FlowSpec
			if json.Unmarshal(raw, &decoded) != nil {
				return false
			}
			if len(d.flows) >= decodeCacheMax {
				clear(d.flows)
			}
			d.flows[string(raw)] = decoded
			flow = decoded
		}
		ev.Flow = flow
		e.Event = ev
		return true
	}
	return false
}

// flowRunIDOnly reads the rest of a TaskRunCreated as jsonb prints it,
// {"flow_run_id": "<uuid>"}, without the cost of a JSON decoder; it reports
// false for any other shape.
func flowRunIDOnly(rest []byte) (uuid.UUID, bool) {
	const prefix, suffix = `{"flow_run_id": "`, `"}`
	if len(rest) != len(prefix)+36+len(suffix) || string(rest[:len(prefix)]) != prefix || string(rest[len(rest)-len(suffix):]) != suffix {
		return uuid.Nil, false
	}
	id, err := uuid.ParseBytes(rest[len(prefix) : len(prefix)+36])
	return id, err == nil
}
