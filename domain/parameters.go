package domain

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strings"
)

// CheckParameterNames refuses overrides that name a parameter the
// deployment does not have, so that a typo (tabel=houses) does not start a
// run that silently uses the default. The names a deployment has are those
// of its default parameters and of its parameters_schema's properties. A
// schema that explicitly allows other names (additionalProperties true or a
// schema, patternProperties, or a composition this check does not read) lets
// every name through, for the schema to judge. A deployment without
// parameters and without a schema takes none, so any override is refused.
func (d DeploymentSpec) CheckParameterNames(overrides map[string]any) error {
	if len(overrides) == 0 {
		return nil
	}
	known, open := d.parameterNames()
	if open {
		return nil
	}
	p := &Problems{Message: "invalid parameters"}
	for _, name := range slices.Sorted(maps.Keys(overrides)) {
		if known[name] {
			continue
		}
		field := "parameters." + name
		if len(known) == 0 {
			p.Add(field, "unknown parameter %q (deployment %s takes no parameters)", name, d.Name)
			continue
		}
		names := slices.Sorted(maps.Keys(known))
		if near := closestName(name, names); near != "" {
			p.Add(field, "unknown parameter %q (did you mean %q? known: %s)", name, near, strings.Join(names, ", "))
		} else {
			p.Add(field, "unknown parameter %q (known: %s)", name, strings.Join(names, ", "))
		}
	}
	return p.Err()
}

// parameterNames returns the names of the deployment's parameters, and
// whether its schema explicitly lets other names through.
func (d DeploymentSpec) parameterNames() (known map[string]bool, open bool) {
	known = map[string]bool{}
	for name := range d.Parameters {
		known[name] = true
	}
	if !hasSchema(d.ParametersSchema) {
		return known, false
	}
	var root map[string]any
	if err := json.NewDecoder(bytes.NewReader(d.ParametersSchema)).Decode(&root); err != nil {
		return known, true // a boolean schema, or one the schema check refuses anyway
	}
	return known, schemaNames(root, root, known, 0)
}

// schemaNames adds the property names a schema object declares, following
// allOf, anyOf, oneOf and local $refs, and reports whether it explicitly
// allows other names.
func schemaNames(root, s map[string]any, known map[string]bool, depth int) (open bool) {
	if depth > 16 { // a $ref cycle
		return true
	}
	for name := range asObject(s["properties"]) {
		known[name] = true
	}
	for _, key := range []string{"additionalProperties", "unevaluatedProperties"} {
		switch v := s[key].(type) {
		case bool:
			if v {
				open = true
			}
		case map[string]any:
			open = true // a schema for the other names: they are allowed
		}
	}
	if len(asObject(s["patternProperties"])) > 0 {
		open = true // names that match a pattern: the schema checks them
	}
	for _, key := range []string{"if", "then", "else", "dependentSchemas"} {
		if _, ok := s[key]; ok {
			open = true // names that depend on values: left to the schema
		}
	}
	for _, key := range []string{"allOf", "anyOf", "oneOf"} {
		list, _ := s[key].([]any)
		for _, sub := range list {
			if o, ok := sub.(map[string]any); ok && schemaNames(root, o, known, depth+1) {
				open = true
			}
		}
	}
	if ref, ok := s["$ref"].(string); ok {
		target, found := resolveLocalRef(root, ref)
		if !found || schemaNames(root, target, known, depth+1) {
			open = true
		}
	}
	return open
}

func asObject(v any) map[string]any {
	o, _ := v.(map[string]any)
	return o
}

// resolveLocalRef follows a reference inside the schema ("#/$defs/x").
func resolveLocalRef(root map[string]any, ref string) (map[string]any, bool) {
	path, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil, false
	}
	cur := root
	for tok := range strings.SplitSeq(strings.TrimPrefix(path, "/"), "/") {
		if tok == "" {
			continue
		}
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		next, ok := cur[tok].(map[string]any)
		if !ok {
			return nil, false
		}
		cur = next
	}
	return cur, true
}

// closestName returns the name nearest to s by edit distance (a swap of two
// neighbours counts as one edit), if it is near enough to be a typo of it.
func closestName(s string, names []string) string {
	best, bestDist := "", -1
	for _, n := range names {
		d := editDistance(strings.ToLower(s), strings.ToLower(n))
		if bestDist < 0 || d < bestDist {
			best, bestDist = n, d
		}
	}
	if bestDist < 0 || bestDist > 1+len([]rune(s))/4 {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and swaps of adjacent characters.
func editDistance(a, b string) int {
	x, y := []rune(a), []rune(b)
	d := make([][]int, len(x)+1)
	for i := range d {
		d[i] = make([]int, len(y)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(x); i++ {
		for j := 1; j <= len(y); j++ {
			cost := 1
			if x[i-1] == y[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && x[i-1] == y[j-2] && x[i-2] == y[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(x)][len(y)]
}
