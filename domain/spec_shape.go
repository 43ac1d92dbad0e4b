package domain

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	rawMessageType  = reflect.TypeFor[json.RawMessage]()
	retryDelaysType = reflect.TypeFor[RetryDelays]()
	timeType        = reflect.TypeFor[time.Time]()
	float64Type     = reflect.TypeFor[float64]()
)

// checkShape reports, each at its path, every part of doc (decoded with
// UseNumber) that does not fit t: unknown fields, wrong JSON types, numbers
// out of range. A null leaves the default, as in encoding/json.
func checkShape(p *Problems, path string, doc any, t reflect.Type) {
	if doc == nil {
		return
	}
	switch t {
	case rawMessageType:
		return
	case timeType:
		var tm time.Time
		if s, ok := doc.(string); !ok || tm.UnmarshalText([]byte(s)) != nil {
			p.Add(path, "must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
		}
		return
	case retryDelaysType:
		if list, ok := doc.([]any); ok {
			for i, v := range list {
				checkShape(p, fmt.Sprintf("%s[%d]", path, i), v, float64Type)
			}
			return
		}
		checkShape(p, path, doc, float64Type)
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		checkShape(p, path, doc, t.Elem())
	case reflect.String:
		if _, ok := doc.(string); !ok {
			p.Add(path, "must be a string")
		}
	case reflect.Bool:
		if _, ok := doc.(bool); !ok {
			p.Add(path, "must be true or false")
		}
	case reflect.Int:
		if n, ok := doc.(json.Number); !ok {
			p.Add(path, "must be an integer")
		} else if _, err := strconv.ParseInt(string(n), 10, strconv.IntSize); err != nil {
			p.Add(path, "must be an integer, got %s", n)
		}
	case reflect.Float64:
		if n, ok := doc.(json.Number); !ok {
			p.Add(path, "must be a number")
		} else if _, err := n.Float64(); err != nil {
			p.Add(path, "number out of range: %s", n)
		}
	case reflect.Slice:
		list, ok := doc.([]any)
		if !ok {
			p.Add(path, "must be a list")
			return
		}
		for i, v := range list {
			checkShape(p, fmt.Sprintf("%s[%d]", path, i), v, t.Elem())
		}
	case reflect.Map:
		obj, ok := doc.(map[string]any)
		if !ok {
			p.Add(path, "must be an object")
			return
		}
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			checkShape(p, path+"."+k, obj[k], t.Elem())
		}
	case reflect.Struct:
		obj, ok := doc.(map[string]any)
		if !ok {
			p.Add(path, "must be an object")
			return
		}
		fields := jsonFields(t)
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			sub := k
			if path != "" {
				sub = path + "." + k
			}
			if ft, known := fields[k]; known {
				checkShape(p, sub, obj[k], ft)
			} else {
				p.Add(sub, "unknown field")
			}
		}
	}
}

var structFields sync.Map // reflect.Type -> map[string]reflect.Type

// jsonFields maps the JSON names of a struct's fields to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	if fields, ok := structFields.Load(t); ok {
		return fields.(map[string]reflect.Type)
	}
	fields := make(map[string]reflect.Type, t.NumField())
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	structFields.Store(t, fields)
	return fields
}
