package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/taskpipe/taskpipe/api"
)

// invalid makes a 422 error whose message names the field at fault and
// whose detail carries it for programs.
func invalid(field, problem string) *api.Error {
	name := field
	if name == "" {
		name = "request body"
	}
	msg := name + ": " + problem
	return api.Errorf(api.ErrInvalid, "%s", msg).WithDetail(map[string]any{
		"field": field, "problem": problem,
	})
}

// readBody reads a request body of at most limit bytes. An empty body reads
// as nil.
func readBody(r *http.Request, w http.ResponseWriter, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, api.Errorf(api.ErrTooLarge,
			"request body is larger than the limit of %d bytes", limit).
			WithDetail(map[string]any{"limit_bytes": limit})
	case err != nil:
		return nil, api.Errorf(api.ErrInvalid, "read request body: %v", err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	return b, nil
}

// decodeJSON decodes b into v. field prefixes the names in its errors
// (for example "inputs[3]"); the empty prefix means the body itself.
func decodeJSON(b []byte, v any, field string) error {
	err := json.Unmarshal(b, v)
	if err == nil {
		return nil
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return invalid(field, fmt.Sprintf("malformed JSON at byte offset %d: %v",
			syn.Offset, syn))
	case errors.As(err, &typ):
		return invalid(joinField(field, typ.Field), "must be "+jsonKind(typ.Type))
	default:
		return invalid(field, err.Error())
	}
}

// joinField joins a field prefix and a dotted path.
func joinField(prefix, path string) string {
	switch {
	case prefix == "":
		return path
	case path == "":
		return prefix
	}
	return prefix + "." + path
}

// jsonKind names the JSON kind a Go type decodes from, with its article.
func jsonKind(t reflect.Type) string {
	if t == reflect.TypeFor[json.RawMessage]() {
		return "a JSON value"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "a value of another type"
}

// decodeRunInput decodes and checks one TaskRunInput; field names it in
// errors ("" for a body, "inputs[3]" for an element of add-runs).
func decodeRunInput(raw json.RawMessage, field string) (api.TaskRunInput, error) {
	var in api.TaskRunInput
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] != '{' && json.Valid(t) {
		return in, invalid(field, "must be an object")
	}
	if err := decodeJSON(raw, &in, field); err != nil {
		return in, locateSpecError(raw, field, err)
	}
	return in, checkRunInput(in, field)
}

// locateSpecError narrows an error raised inside task_spec (whose schema
// union decodes itself, so encoding/json cannot name the field) to the
// task_spec field at fault.
func locateSpecError(raw json.RawMessage, field string, err error) error {
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Detail["field"] != field {
		return err
	}
	var top struct {
		TaskSpec json.RawMessage `json:"task_spec"`
	}
	if json.Unmarshal(raw, &top) != nil || len(top.TaskSpec) == 0 {
		return err
	}
	return locateTaskSpecError(top.TaskSpec, joinField(field, "task_spec"), err)
}

// locateTaskSpecError decodes a task spec field by field to name the one
// that fails; it returns fallback when every field decodes.
func locateTaskSpecError(raw json.RawMessage, field string, fallback error) error {
	var parts map[string]json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil {
		return invalid(field, "must be an object")
	}
	for _, name := range []string{"output_schema", "input_schema"} {
		p, ok := parts[name]
		if !ok || string(p) == "null" {
			continue
		}
		var s api.Schema
		if err := json.Unmarshal(p, &s); err != nil {
			return invalid(joinField(field, name), schemaProblem(err))
		}
	}
	return fallback
}

// schemaProblem words a schema decoding error.
func schemaProblem(err error) string {
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return "must be a string or an object with type json, text or auto"
	}
	return err.Error()
}

// checkRunInput checks the keys a run input requires.
func checkRunInput(in api.TaskRunInput, field string) error {
	input := bytes.TrimSpace(in.Input)
	switch {
	case len(input) == 0 || string(input) == "null":
		return invalid(joinField(field, "input"), "is required")
	case input[0] != '"' && input[0] != '{':
		return invalid(joinField(field, "input"), "must be a string or an object")
	case strings.TrimSpace(in.Processor) == "":
		return invalid(joinField(field, "processor"), "is required")
	}
	if err := checkMetadata(in.Metadata, joinField(field, "metadata")); err != nil {
		return err
	}
	return checkTaskSpec(in.TaskSpec, joinField(field, "task_spec"))
}

// checkTaskSpec checks that a json output schema carries its json_schema.
func checkTaskSpec(spec *api.TaskSpec, field string) error {
	if spec == nil {
		return nil
	}
	if spec.OutputSchema.Type == "" {
		return invalid(joinField(field, "output_schema"), "is required")
	}
	if spec.OutputSchema.Type == api.SchemaJSON && len(spec.OutputSchema.JSONSchema) == 0 {
		return invalid(joinField(field, "output_schema.json_schema"), "is required for type json")
	}
	return nil
}

// decodeAddRuns decodes and checks the body of an add-runs call. Each input
// is decoded on its own so errors name it by index.
func decodeAddRuns(b []byte) (api.TaskGroupRunRequest, error) {
	var req api.TaskGroupRunRequest
	if b == nil {
		return req, invalid("", "request body is required")
	}
	var top struct {
		Inputs          json.RawMessage `json:"inputs"`
		DefaultTaskSpec json.RawMessage `json:"default_task_spec"`
	}
	if err := decodeJSON(b, &top, ""); err != nil {
		return req, err
	}
	// Split the inputs array before decoding any element.
	var inputs []json.RawMessage
	if len(top.Inputs) == 0 || string(top.Inputs) == "null" {
		return req, invalid("inputs", "is required")
	}
	if err := json.Unmarshal(top.Inputs, &inputs); err != nil {
		return req, invalid("inputs", "must be an array")
	}
	if len(inputs) > api.MaxRunsPerAdd {
		return req, api.Errorf(api.ErrInvalid,
			"inputs: holds %d runs; at most %d are allowed per call, split the batch",
			len(inputs), api.MaxRunsPerAdd).
			WithDetail(map[string]any{"field": "inputs", "count": len(inputs),
				"max": api.MaxRunsPerAdd})
	}

	// Decode the default spec, then every input.
	if len(top.DefaultTaskSpec) > 0 && string(top.DefaultTaskSpec) != "null" {
		var spec api.TaskSpec
		if err := decodeJSON(top.DefaultTaskSpec, &spec, "default_task_spec"); err != nil {
			return req, locateTaskSpecError(top.DefaultTaskSpec, "default_task_spec", err)
		}
		if err := checkTaskSpec(&spec, "default_task_spec"); err != nil {
			return req, err
		}
		req.DefaultTaskSpec = &spec
	}
	req.Inputs = make([]api.TaskRunInput, len(inputs))
	for i, raw := range inputs {
		in, err := decodeRunInput(raw, fmt.Sprintf("inputs[%d]", i))
		if err != nil {
			return req, err
		}
		req.Inputs[i] = in
	}
	return req, nil
}

// queryBool reads an optional boolean query parameter.
func queryBool(q url.Values, name string, def bool) (bool, error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return def, invalid(name, fmt.Sprintf("must be true or false, not %q", v))
	}
	return b, nil
}

// querySeconds reads an optional non-negative duration in (fractional)
// seconds; ok is false when the parameter is absent.
func querySeconds(q url.Values, name string) (d time.Duration, ok bool, err error) {
	v := q.Get(name)
	if v == "" {
		return 0, false, nil
	}
	f, perr := strconv.ParseFloat(v, 64)
	if perr != nil || f != f { // f != f is NaN
		return 0, false, invalid(name, fmt.Sprintf("must be a number of seconds, not %q", v))
	}
	if f < 0 {
		return 0, false, invalid(name, fmt.Sprintf("must not be negative, not %q", v))
	}
	const maxSecs = float64(1<<62) / float64(time.Second)
	return time.Duration(min(f, maxSecs) * float64(time.Second)), true, nil
}

// queryStatus reads the optional run status filter.
func queryStatus(q url.Values) (api.RunStatus, error) {
	v := q.Get("status")
	if v == "" {
		return "", nil
	}
	s := api.RunStatus(v)
	if !s.Valid() {
		names := make([]string, len(api.AllStatuses))
		for i, st := range api.AllStatuses {
			names[i] = string(st)
		}
		return "", invalid("status", fmt.Sprintf("must be one of %s, not %q",
			strings.Join(names, ", "), v))
	}
	return s, nil
}

// checkMetadata checks that metadata values are strings, numbers or
// booleans.
func checkMetadata(m api.Metadata, field string) error {
	for k, v := range m {
		switch v.(type) {
		case string, float64, bool:
		default:
			return invalid(field+"."+k, "must be a string, number or boolean")
		}
	}
	return nil
}
