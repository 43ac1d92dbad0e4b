package domain_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/ordoflow/ordo/domain"
)

func TestCheckParameterNames(t *testing.T) {
	ml := map[string]any{"table": "houses", "test_size": 0.2, "n_estimators": 200}
	for _, tc := range []struct {
		name      string
		params    map[string]any
		schema    string
		overrides map[string]any
		want      string // the error's text; "" means accepted
	}{
		{name: "known names", params: ml, overrides: map[string]any{"table": "flats", "test_size": 0.3}},
		{name: "no overrides", params: nil, overrides: nil},
		{name: "a typo is refused with the closest name and the known ones", params: ml, overrides: map[string]any{"tabel": "houses"},
			want: `invalid parameters: parameters.tabel: unknown parameter "tabel" (did you mean "table"? known: n_estimators, table, test_size)`},
		{name: "a name near none gets the known ones only", params: ml, overrides: map[string]any{"learning_rate": 0.1},
			want: `invalid parameters: parameters.learning_rate: unknown parameter "learning_rate" (known: n_estimators, table, test_size)`},
		{name: "every unknown name is named", params: ml, overrides: map[string]any{"tabel": 1, "test_sise": 2, "table": "x"},
			want: `invalid parameters: parameters.tabel: unknown parameter "tabel" (did you mean "table"? known: n_estimators, table, test_size); ` +
				`parameters.test_sise: unknown parameter "test_sise" (did you mean "test_size"? known: n_estimators, table, test_size)`},
		{name: "a deployment without parameters takes none", overrides: map[string]any{"x": 1},
			want: `invalid parameters: parameters.x: unknown parameter "x" (deployment d takes no parameters)`},
		{name: "schema properties are known names", params: map[string]any{"table": "houses"},
			schema: `{"type": "object", "properties": {"limit": {"type": "integer"}}}`, overrides: map[string]any{"limit": 5}},
		{name: "a schema without additionalProperties allows no other names", params: map[string]any{"table": "houses"},
			schema: `{"type": "object", "properties": {"limit": {"type": "integer"}}}`, overrides: map[string]any{"limt": 5},
			want: `invalid parameters: parameters.limt: unknown parameter "limt" (did you mean "limit"? known: limit, table)`},
		{name: "additionalProperties true allows other names", params: ml,
			schema: `{"type": "object", "additionalProperties": true}`, overrides: map[string]any{"tabel": 1}},
		{name: "an additionalProperties schema allows other names", params: ml,
			schema: `{"type": "object", "additionalProperties": {"type": "string"}}`, overrides: map[string]any{"extra": "x"}},
		{name: "additionalProperties false allows none", params: ml,
			schema: `{"type": "object", "additionalProperties": false}`, overrides: map[string]any{"extra": "x"},
			want: `invalid parameters: parameters.extra: unknown parameter "extra" (known: n_estimators, table, test_size)`},
		{name: "patternProperties leave names to the schema", params: ml,
			schema: `{"type": "object", "patternProperties": {"^x_": {}}}`, overrides: map[string]any{"x_a": 1}},
		{name: "names in allOf and local refs are known",
			schema:    `{"allOf": [{"$ref": "#/$defs/base"}, {"properties": {"b": {}}}], "$defs": {"base": {"properties": {"a": {}}}}}`,
			overrides: map[string]any{"a": 1, "b": 2}},
		{name: "a name outside allOf and refs is refused",
			schema:    `{"allOf": [{"$ref": "#/$defs/base"}], "$defs": {"base": {"properties": {"a": {}}}}}`,
			overrides: map[string]any{"c": 1},
			want:      `invalid parameters: parameters.c: unknown parameter "c" (did you mean "a"? known: a)`},
		{name: "a ref that leads nowhere leaves names to the schema", schema: `{"$ref": "#/$defs/missing"}`, overrides: map[string]any{"c": 1}},
		{name: "a short name far from all is not guessed", params: map[string]any{"ab": 1}, overrides: map[string]any{"xy": 1},
			want: `invalid parameters: parameters.xy: unknown parameter "xy" (known: ab)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := domain.DeploymentSpec{Name: "d", Parameters: tc.params}
			if tc.schema != "" {
				d.ParametersSchema = json.RawMessage(tc.schema)
			}
			err := d.CheckParameterNames(tc.overrides)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == "":
				return
			case err == nil:
				t.Fatalf("accepted, want %s", tc.want)
			case err.Error() != tc.want:
				t.Fatalf("got  %s\nwant %s", err, tc.want)
			}
			var de *domain.Error
			if !errors.As(err, &de) || de.Code != domain.CodeInvalid {
				t.Fatalf("want an invalid *domain.Error, got %#v", err)
			}
		})
	}
}
