package domain

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// CheckParameters checks run parameters (defaults already merged with the
// overrides) against the deployment's parameters_schema, if it has one. The
// error details name the parameters, as in "parameters.test_size".
func (d DeploymentSpec) CheckParameters(params map[string]any) error {
	if !hasSchema(d.ParametersSchema) {
		return nil
	}
	p := &Problems{Message: "invalid parameters"}
	if sch := compileParametersSchema(p, d.ParametersSchema); sch != nil {
		checkParameters(p, sch, params)
	}
	return p.Err()
}

// checkDefaults checks the deployment's default parameters against its
// schema. A required parameter may go without a default when nothing starts
// runs on its own (no schedule): each run started by hand or as a sub-flow
// then has to give it, and CheckParameters says so when one does not.
func (d DeploymentSpec) checkDefaults(p *Problems, sch *jsonschema.Schema) {
	var root struct {
		Required []string `json:"required"`
	}
	_ = json.Unmarshal(d.ParametersSchema, &root) // it compiled, so it is JSON
	all := &Problems{}
	checkParameters(all, sch, d.Parameters)
	for _, det := range all.Details {
		name, top := strings.CutPrefix(det.Field, "parameters.")
		if _, given := d.Parameters[name]; top && !given && slices.Contains(root.Required, name) {
			if d.Schedule == nil {
				continue
			}
			det.Message += ": the deployment has a schedule, whose runs start with the defaults, so a required parameter needs one"
		}
		p.Details = append(p.Details, det)
	}
}

func hasSchema(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && !bytes.Equal(t, []byte("null"))
}

var schemaPrinter = message.NewPrinter(language.English)

// noLoader refuses to load schemas from anywhere: domain reads no files and
// no network, so a parameters schema must be self-contained.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("cannot load %q: only references inside the schema (#...) are allowed", url)
}

// compileParametersSchema compiles a parameters schema, or reports why it
// cannot and returns nil.
func compileParametersSchema(p *Problems, raw json.RawMessage) *jsonschema.Schema {
	const url = "urn:ordo:parameters_schema"
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		p.Add("parameters_schema", "invalid JSON: %v", err)
		return nil
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(noLoader{})
	if err := c.AddResource(url, doc); err != nil {
		p.Add("parameters_schema", "%v", err)
		return nil
	}
	sch, err := c.Compile(url)
	var sve *jsonschema.SchemaValidationError
	var ve *jsonschema.ValidationError
	switch {
	case err == nil:
		return sch
	case errors.As(err, &sve) && errors.As(sve.Err, &ve):
		addSchemaErrors(p, "parameters_schema", ve, doc, "not a valid JSON Schema: ")
	default:
		p.Add("parameters_schema", "not a valid JSON Schema: %s", strings.ReplaceAll(err.Error(), "\n", " "))
	}
	return nil
}

func checkParameters(p *Problems, sch *jsonschema.Schema, params map[string]any) {
	if params == nil {
		params = map[string]any{}
	}
	b, err := json.Marshal(params)
	if err != nil {
		p.Add("parameters", "not representable as JSON: %v", err)
		return
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		p.Add("parameters", "%v", err)
		return
	}
	var ve *jsonschema.ValidationError
	if err := sch.Validate(inst); errors.As(err, &ve) {
		addSchemaErrors(p, "parameters", ve, inst, "")
	} else if err != nil {
		p.Add("parameters", "%v", err)
	}
}

// addSchemaErrors adds the leaves of a schema validation error, each at the
// path of the value it is about ("parameters.items[2]").
func addSchemaErrors(p *Problems, root string, e *jsonschema.ValidationError, inst any, prefix string) {
	if len(e.Causes) > 0 {
		for _, c := range e.Causes {
			addSchemaErrors(p, root, c, inst, prefix)
		}
		return
	}
	field := root
	v := inst
	for _, tok := range e.InstanceLocation {
		switch x := v.(type) {
		case []any:
			field += "[" + tok + "]"
			if i, err := strconv.Atoi(tok); err == nil && i >= 0 && i < len(x) {
				v = x[i]
			}
		case map[string]any:
			field += "." + tok
			v = x[tok]
		default:
			field += "." + tok
		}
	}
	if req, ok := e.ErrorKind.(*kind.Required); ok {
		for _, name := range req.Missing {
			p.Add(field+"."+name, "%srequired", prefix)
		}
		return
	}
	p.Add(field, "%s%s", prefix, e.ErrorKind.LocalizedString(schemaPrinter))
}
