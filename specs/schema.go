package specs

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/taskpipe/taskpipe/api"
)

// Schema is a compiled JSON schema that checks values: run inputs against a
// spec's input_schema, processor outputs against its output_schema. It is
// safe for concurrent use.
type Schema struct {
	compiled *jsonschema.Schema
	// fast, when the schema is simple enough, accepts valid values without
	// the full validator; see schema_fast.go. Nil means always use compiled.
	fast *fastSchema
}

// schemaCacheSize bounds the compiled schemas kept; when it is reached the
// cache starts afresh. Many runs share few specs, so this is rarely hit.
const schemaCacheSize = 4096

// schemaCache holds compiled schemas by the SHA-256 of their JSON text.
var schemaCache = struct {
	sync.RWMutex
	byHash map[[32]byte]*Schema
}{byHash: map[[32]byte]*Schema{}}

// printer renders validation messages in English.
var printer = message.NewPrinter(language.English)

// schemaURL is where a compiled schema is registered. The compiler loads no
// other URL: references to files or the network fail to compile.
const schemaURL = "file:///taskpipe/schema.json"

// CompileSchema compiles the json_schema of a task spec (JSON Schema draft
// 2020-12 unless the schema names another draft). Compiled schemas are
// cached by content, so calling it for every run of a spec costs one hash.
// A schema that does not compile gives an error wrapping api.ErrInvalid.
func CompileSchema(raw json.RawMessage) (*Schema, error) {
	key := sha256.Sum256(raw)
	schemaCache.RLock()
	s, ok := schemaCache.byHash[key]
	schemaCache.RUnlock()
	if ok {
		return s, nil
	}

	// Compile outside the lock; two callers may both compile a new schema,
	// which is harmless.
	doc, err := decodeJSON(raw)
	if err != nil {
		return nil, api.Errorf(api.ErrInvalid, "decode json schema: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(jsonschema.SchemeURLLoader{})
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, api.Errorf(api.ErrInvalid, "add json schema: %v", err)
	}
	compiled, err := c.Compile(schemaURL)
	if err != nil {
		return nil, api.Errorf(api.ErrInvalid, "compile json schema: %v", err)
	}
	s = &Schema{compiled: compiled, fast: compileFast(doc)}

	schemaCache.Lock()
	if len(schemaCache.byHash) >= schemaCacheSize {
		schemaCache.byHash = map[[32]byte]*Schema{}
	}
	schemaCache.byHash[key] = s
	schemaCache.Unlock()
	return s, nil
}

// ValidateValue checks a decoded JSON value (from encoding/json, numbers as
// float64 or json.Number). The error lists every violation, each naming the
// field by its dotted path: `revenue: got string, want number`.
func (s *Schema) ValidateValue(v any) error {
	// The fast checker only ever accepts values the full validator accepts;
	// anything else, valid or not, goes to the full validator.
	if s.fast != nil && s.fast.validValue(v) {
		return nil
	}
	err := s.compiled.Validate(v)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return fmt.Errorf("validate value: %w", err)
	}
	var msgs []string
	collectViolations(ve, &msgs)
	if len(msgs) == 0 {
		msgs = append(msgs, ve.Error())
	}
	return &ValueError{Violations: msgs}
}

// ValidateJSON decodes a JSON document and checks it like ValidateValue.
func (s *Schema) ValidateJSON(raw json.RawMessage) error {
	// A document the fast checker accepts as it reads needs no decoding.
	if s.fast != nil && s.fast.validJSON(raw) {
		return nil
	}
	v, err := decodeJSON(raw)
	if err != nil {
		return &ValueError{Violations: []string{"not valid JSON: " + err.Error()}}
	}
	return s.ValidateValue(v)
}

// ValueError is a value that does not match its schema.
type ValueError struct {
	// Violations are the problems found, each `field.path: message`.
	Violations []string
}

// Error implements error.
func (e *ValueError) Error() string {
	return strings.Join(e.Violations, "; ")
}

// collectViolations gathers the leaf errors of a validation error tree.
func collectViolations(ve *jsonschema.ValidationError, msgs *[]string) {
	if len(ve.Causes) > 0 {
		for _, c := range ve.Causes {
			collectViolations(c, msgs)
		}
		return
	}
	*msgs = append(*msgs, fieldPath(ve.InstanceLocation)+": "+ve.ErrorKind.LocalizedString(printer))
}

// fieldPath renders an instance location as a dotted field path.
func fieldPath(loc []string) string {
	if len(loc) == 0 {
		return "(root)"
	}
	return strings.Join(loc, ".")
}
