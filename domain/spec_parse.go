package domain

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"

	"github.com/goccy/go-yaml"
)

// ParseDeployment parses a JSON deployment body strictly: unknown fields,
// values of the wrong type and data after the object are errors naming the
// field. It then applies defaults and validates. Every error is an *Error with
// CodeInvalid.
func ParseDeployment(data []byte) (DeploymentSpec, error) {
	if err := checkDocument(data, "deployment", reflect.TypeFor[DeploymentSpec]()); err != nil {
		return DeploymentSpec{}, err
	}
	var d DeploymentSpec
	if err := json.Unmarshal(data, &d); err != nil {
		return DeploymentSpec{}, Errorf(CodeInvalid, "invalid deployment: %v", err)
	}
	if hasSchema(d.ParametersSchema) {
		var b bytes.Buffer
		_ = json.Compact(&b, d.ParametersSchema) // valid: it was decoded above
		d.ParametersSchema = b.Bytes()
	} else {
		d.ParametersSchema = nil
	}
	d.ApplyDefaults()
	if err := d.Validate(); err != nil {
		return DeploymentSpec{}, err
	}
	return d, nil
}

// checkDocument checks that data is one JSON object of t's shape: no
// unknown fields, no values of the wrong type; what names it in errors.
func checkDocument(data []byte, what string, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Errorf(CodeInvalid, "invalid JSON: data after the %s object", what)
	}
	if _, ok := doc.(map[string]any); !ok {
		return Errorf(CodeInvalid, "invalid %s: the document must be an object", what)
	}
	p := &Problems{Message: "invalid " + what}
	checkShape(p, "", doc, t)
	return p.Err()
}

// ParseDeploymentYAML parses a YAML deployment file: the same document as the
// JSON body, checked the same way.
func ParseDeploymentYAML(data []byte) (DeploymentSpec, error) {
	// yaml.YAMLToJSON, with a bound on what aliases expand to.
	var doc any
	if err := yaml.UnmarshalWithOptions(data, &doc, yaml.UseOrderedMap()); err != nil {
		return DeploymentSpec{}, Errorf(CodeInvalid, "invalid YAML: %s", yaml.FormatError(err, false, false))
	}
	budget := maxYAMLValues
	if !countValues(doc, &budget) {
		return DeploymentSpec{}, Errorf(CodeInvalid, "invalid YAML: more than %d values once aliases are expanded", maxYAMLValues)
	}
	js, err := yaml.MarshalWithOptions(doc, yaml.JSON())
	if err != nil {
		return DeploymentSpec{}, Errorf(CodeInvalid, "invalid YAML: %v", err)
	}
	return ParseDeployment(js)
}

// maxYAMLValues bounds the size of a YAML document with its aliases
// expanded, so that a few lines of nested aliases ("billion laughs") cannot
// take minutes and gigabytes. A flow of MaxTasksPerFlow tasks fits.
const maxYAMLValues = 1 << 21

// countValues takes the values in v from budget and reports whether it
// lasted. Decoded aliases share their values, so this stops early rather
// than walk an exponential tree.
func countValues(v any, budget *int) bool {
	if *budget--; *budget < 0 {
		return false
	}
	switch v := v.(type) {
	case yaml.MapSlice:
		for _, item := range v {
			if !countValues(item.Key, budget) || !countValues(item.Value, budget) {
				return false
			}
		}
	case []any:
		for _, e := range v {
			if !countValues(e, budget) {
				return false
			}
		}
	}
	return true
}

// ParseDeploymentAuto parses JSON when the first non-space byte is '{', and
// YAML otherwise.
func ParseDeploymentAuto(data []byte) (DeploymentSpec, error) {
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		return ParseDeployment(data)
	}
	return ParseDeploymentYAML(data)
}

func jsonError(err error) *Error {
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &syn):
		return Errorf(CodeInvalid, "invalid JSON at byte %d: %v", syn.Offset, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return Errorf(CodeInvalid, "invalid JSON: unexpected end of input")
	}
	return Errorf(CodeInvalid, "invalid JSON: %v", err)
}
