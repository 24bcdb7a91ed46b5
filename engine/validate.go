package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"

	gojson "github.com/goccy/go-json"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/specs"
)

// Limits of the Task API that the engine enforces on submitted runs.
const (
	maxSpecAndInputChars = 25000
	maxMetadataKeyChars  = 16
	maxMetadataValChars  = 512
	maxPolicyDomains     = 200
)

// specInfo is what the engine knows about one resolved task spec: checked
// once, then shared by every run that uses it.
type specInfo struct {
	hash     string
	json     json.RawMessage
	spec     api.TaskSpec
	warnings []api.Warning
	err      error
	input    *specs.Schema // compiled input_schema, nil unless json
	output   *specs.Schema // compiled output_schema, nil unless json
}

// validator caches specInfo by the spec's JSON text.
type validator struct {
	mu     sync.RWMutex
	specs  map[string]*specInfo // by JSON text
	hashes map[string]*specInfo // by spec hash
}

func newValidator() *validator {
	return &validator{specs: make(map[string]*specInfo), hashes: make(map[string]*specInfo)}
}

// autoSpec is the spec of a run submitted without one.
var autoSpec = api.TaskSpec{OutputSchema: api.Schema{Type: api.SchemaAuto}}

// spec checks a resolved task spec, compiling its schemas, once per distinct
// spec.
func (v *validator) spec(ts api.TaskSpec) *specInfo {
	raw, err := json.Marshal(ts)
	if err != nil {
		return &specInfo{err: fmt.Errorf("encode task spec: %w", err)}
	}
	key := string(raw)
	v.mu.RLock()
	info, ok := v.specs[key]
	v.mu.RUnlock()
	if ok {
		return info
	}

	info = &specInfo{hash: specs.SpecHash(ts), json: raw, spec: ts}
	info.warnings, info.err = specs.ValidateTaskSpec(ts)
	if info.err == nil && ts.InputSchema != nil && ts.InputSchema.Type == api.SchemaJSON {
		info.input, info.err = specs.CompileSchema(ts.InputSchema.JSONSchema)
	}
	if info.err == nil && ts.OutputSchema.Type == api.SchemaJSON {
		info.output, info.err = specs.CompileSchema(ts.OutputSchema.JSONSchema)
	}
	v.mu.Lock()
	if len(v.specs) > 10000 {
		// Bound the cache.
		v.specs = make(map[string]*specInfo)
		v.hashes = make(map[string]*specInfo)
	}
	v.specs[key] = info
	v.hashes[info.hash] = info
	v.mu.Unlock()
	return info
}

// stored returns the checked spec of a stored run from its hash, decoding
// the stored JSON only the first time.
func (v *validator) stored(hash string, raw json.RawMessage) *specInfo {
	v.mu.RLock()
	info, ok := v.hashes[hash]
	v.mu.RUnlock()
	if ok {
		return info
	}
	if len(raw) == 0 {
		return v.spec(autoSpec)
	}
	var ts api.TaskSpec
	if err := json.Unmarshal(raw, &ts); err != nil {
		return &specInfo{hash: hash, err: fmt.Errorf("decode stored task spec %s: %w", hash, err)}
	}
	return v.spec(ts)
}

// checkInput validates one submitted run. field is its path in the request
// ("inputs[3]" or "" for a single run). It returns the resolved spec and
// the run's warnings, or an *api.Error naming the field at fault.
func (e *Engine) checkInput(field string, in *api.TaskRunInput, def *api.TaskSpec,
	seen map[*api.TaskSpec]*specInfo) (*specInfo, []api.Warning, error) {
	at := func(name string) string {
		if field == "" {
			return name
		}
		return field + "." + name
	}

	// The processor must be configured here.
	if in.Processor == "" {
		return nil, nil, api.Errorf(api.ErrInvalid, "%s: is required", at("processor"))
	}
	if _, ok := e.backends[in.Processor]; !ok {
		return nil, nil, api.Errorf(api.ErrForbidden, "%s: unknown processor %q", at("processor"), in.Processor)
	}

	// The input is a string or an object.
	trimmed := bytes.TrimSpace(in.Input)
	if len(trimmed) == 0 || (trimmed[0] != '"' && trimmed[0] != '{') {
		return nil, nil, api.Errorf(api.ErrInvalid, "%s: must be a string or an object", at("input"))
	}
	if err := checkMetadata(at("metadata"), in.Metadata); err != nil {
		return nil, nil, err
	}
	if err := checkPolicy(at("source_policy"), in.SourcePolicy); err != nil {
		return nil, nil, err
	}
	if in.Webhook != nil {
		u, err := url.Parse(in.Webhook.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, nil, api.Errorf(api.ErrInvalid, "%s: must be an absolute http or https URL", at("webhook.url"))
		}
	}

	// Resolve and check the task spec.
	spec, specField := in.TaskSpec, at("task_spec")
	if spec == nil {
		spec, specField = def, "default_task_spec"
	}
	if spec == nil {
		spec, specField = &autoSpec, at("task_spec")
	}
	info, ok := seen[spec]
	if !ok {
		info = e.validator.spec(*spec)
		seen[spec] = info
	}
	if info.err != nil {
		return nil, nil, api.Errorf(api.ErrInvalid, "%s: %v", specField, info.err)
	}
	if n := len(info.json) + len(trimmed); n > maxSpecAndInputChars {
		return nil, nil, api.Errorf(api.ErrInvalid,
			"%s: task spec and input are %d characters, more than the limit of %d", at("input"), n, maxSpecAndInputChars)
	}

	// An input that breaks input_schema is a warning, as in the Task API.
	warnings := info.warnings
	if info.input != nil && info.input.ValidateJSON(trimmed) != nil {
		// Invalid (or undecidable without decoding): decode it to report
		// it as before.
		var v any
		if err := gojson.Unmarshal(trimmed, &v); err == nil {
			if err := info.input.ValidateValue(v); err != nil {
				warnings = append(append([]api.Warning(nil), warnings...), api.Warning{
					Type:    api.WarningInput,
					Message: fmt.Sprintf("input does not match input_schema: %v", err),
				})
			}
		}
	}
	return info, warnings, nil
}

func checkMetadata(field string, md api.Metadata) error {
	for k, v := range md {
		if len(k) > maxMetadataKeyChars {
			return api.Errorf(api.ErrInvalid, "%s: key %q is longer than %d characters", field, k, maxMetadataKeyChars)
		}
		switch val := v.(type) {
		case string:
			if len(val) > maxMetadataValChars {
				return api.Errorf(api.ErrInvalid, "%s.%s: longer than %d characters", field, k, maxMetadataValChars)
			}
		case float64, bool, json.Number, int, int64:
		default:
			return api.Errorf(api.ErrInvalid, "%s.%s: must be a string, number or boolean", field, k)
		}
	}
	return nil
}

func checkPolicy(field string, p *api.SourcePolicy) error {
	if p == nil {
		return nil
	}
	if n := len(p.IncludeDomains) + len(p.ExcludeDomains); n > maxPolicyDomains {
		return api.Errorf(api.ErrInvalid, "%s: %d domains, more than the limit of %d", field, n, maxPolicyDomains)
	}
	return nil
}

// errInvalidOutput marks processor output that breaks the output schema.
var errInvalidOutput = errors.New("output does not match output_schema")

// checkOutput validates a processor's output against the run's spec.
func (e *Engine) checkOutput(info *specInfo, out *api.Output) error {
	if out == nil {
		return fmt.Errorf("%w: processor returned no output", errInvalidOutput)
	}
	if info == nil || info.output == nil {
		return nil
	}
	if out.Type != api.OutputJSON {
		return fmt.Errorf("%w: got %s output for a json schema", errInvalidOutput, out.Type)
	}
	if info.output.ValidateJSON(out.Content) == nil {
		return nil
	}
	var v any
	if err := gojson.Unmarshal(out.Content, &v); err != nil {
		return fmt.Errorf("%w: content is not JSON: %v", errInvalidOutput, err)
	}
	if err := info.output.ValidateValue(v); err != nil {
		return fmt.Errorf("%w: %v", errInvalidOutput, err)
	}
	return nil
}
