package domain

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// maxCacheKeyText is the longest rendered cache key template kept as is;
// longer ones are replaced by their SHA-256.
const maxCacheKeyText = 128

// CacheKey returns the key under which the result of task t, run with these
// parameters and inputs (upstream task name -> result), is cached; ok is false
// when the task is not cached. Key "inputs" gives the hex SHA-256 of the task
// definition, parameters and inputs; a template gives the task name, ":" and
// the rendered template (its SHA-256 when longer than 128 bytes), where
// string values are inserted as is and others as compact JSON. The key does
// not depend on map order.
func CacheKey(t TaskSpec, params map[string]any, inputs map[string]json.RawMessage) (key string, ok bool) {
	if t.Cache == nil {
		return "", false
	}
	switch t.Cache.Key {
	case "", CacheKeyNone:
		return "", false
	case CacheKeyInputs:
		decoded := make(map[string]any, len(inputs))
		for name, raw := range inputs {
			decoded[name] = decodeResult(raw)
		}
		sum := sha256.Sum256(canonicalJSON(map[string]any{
			"task": map[string]any{
				"name": t.Name, "command": t.Command, "handler": t.Handler, "deployment": t.Deployment,
				"env": t.Env, "parameters": t.Parameters,
			},
			"parameters": params,
			"inputs":     decoded,
		}))
		return hex.EncodeToString(sum[:]), true
	}
	segs, err := parseCacheTemplate(t.Cache.Key)
	if err != nil {
		return "", false
	}
	var b strings.Builder
	for _, s := range segs {
		if !s.placeholder {
			b.WriteString(s.text)
			continue
		}
		var v any
		switch src, name, _ := strings.Cut(s.text, "."); src {
		case "parameters":
			v = params[name]
		case "inputs":
			v = decodeResult(inputs[name])
		}
		if str, isString := v.(string); isString {
			b.WriteString(str)
		} else {
			b.Write(canonicalJSON(v))
		}
	}
	rendered := b.String()
	if len(rendered) > maxCacheKeyText {
		sum := sha256.Sum256([]byte(rendered))
		rendered = hex.EncodeToString(sum[:])
	}
	return t.Name + ":" + rendered, true
}

// decodeResult decodes a task result for hashing or rendering, keeping
// numbers as written; a result that is not JSON is used as a string.
func decodeResult(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return string(raw)
	}
	return v
}

// canonicalJSON encodes v compactly with map keys sorted (encoding/json
// sorts them) and without HTML escaping.
func canonicalJSON(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Append(nil, v) // NaN or the like, from Go callers
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

type cacheSegment struct {
	text        string
	placeholder bool // text is what was inside {{ }}, trimmed
}

func parseCacheTemplate(s string) ([]cacheSegment, error) {
	var segs []cacheSegment
	for s != "" {
		open := strings.Index(s, "{{")
		if open < 0 {
			segs = append(segs, cacheSegment{text: s})
			break
		}
		if open > 0 {
			segs = append(segs, cacheSegment{text: s[:open]})
		}
		rest := s[open+2:]
		end := strings.Index(rest, "}}")
		if end < 0 {
			return nil, errors.New(`"{{" without a closing "}}"`)
		}
		segs = append(segs, cacheSegment{text: strings.TrimSpace(rest[:end]), placeholder: true})
		s = rest[end+2:]
	}
	return segs, nil
}
