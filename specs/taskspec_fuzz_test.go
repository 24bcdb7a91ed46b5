package specs

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/taskpipe/taskpipe/api"
)

// FuzzTaskSpec decodes arbitrary bytes as a task spec, validates it and, when
// it is valid json, compiles its output schema and maps it to columns. None
// of it may panic, and a rejected spec must always be a 422.
func FuzzTaskSpec(f *testing.F) {
	for _, seed := range []string{
		`{"output_schema":` + goodSchema + `}`,
		`{"output_schema":{"type":"json","json_schema":` + goodSchema + `}}`,
		`{"output_schema":"a report","input_schema":"a company"}`,
		`{"output_schema":{"type":"auto"}}`,
		`{"output_schema":{"type":"text","description":null}}`,
		`{"output_schema":{"json_schema":{"type":"object","properties":{"a":{"type":"null"}}}}}`,
		`{"output_schema":{"json_schema":{"type":"object","properties":{"a":{"anyOf":[{"type":"integer"},{"type":"null"}]}}}}}`,
		`{"output_schema":{"json_schema":{"type":"object","properties":{"a":{"type":"array","items":{"type":"object","properties":{"b":{"enum":[1,"x",null]}}}}}}}}`,
		`{"output_schema":{"json_schema":{"type":"object","properties":{"a":{"$ref":"#/$defs/x"}},"$defs":{"x":{"type":"string"}}}}}`,
		`{"output_schema":{"json_schema":{"type":"object","properties":{"a":{"type":["string","integer"]}}}}}`,
		`{"output_schema":{"json_schema":[]}}`,
		`{"output_schema":{"json_schema":{"properties":5,"type":7,"items":true}}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var spec api.TaskSpec
		if err := json.Unmarshal(data, &spec); err != nil {
			return
		}
		_, err := ValidateTaskSpec(spec)
		_ = SpecHash(spec)
		if err != nil {
			if !errors.Is(err, api.ErrInvalid) {
				t.Fatalf("rejection does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if spec.OutputSchema.Type != api.SchemaJSON {
			return
		}
		if s, err := CompileSchema(spec.OutputSchema.JSONSchema); err == nil {
			_ = s.ValidateJSON(json.RawMessage(`{"a":1}`))
		}
	})
}
