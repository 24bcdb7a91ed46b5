// Package specs reads and checks what a user declares: the task spec of a
// run (input and output schemas in the Task API's format) and the pipeline
// spec of `taskpipe run`. It also turns an output schema into typed SQL
// columns, the schema of the table a sink writes.
package specs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sort"
	"strings"

	"github.com/taskpipe/taskpipe/api"
)

// Limits of a task spec, as the Task API documents them.
const (
	// MaxSpecChars is the most characters the JSON of a task spec may have.
	MaxSpecChars = 15000
	// MaxNestingDepth is the deepest nesting of object schemas; the root
	// object is level 1. (The API's pages say 5 in one place and 3 in
	// another; we enforce the larger.)
	MaxNestingDepth = 5
	// MaxProperties is the most properties all objects of a schema may
	// declare together.
	MaxProperties = 100
	// MaxStringChars bounds the total length of property and definition
	// names, titles, descriptions and enum and const strings.
	MaxStringChars = 25000
	// MaxEnumValues bounds the enum values of a schema, all enums together.
	MaxEnumValues = 500
	// LargeEnumValues is the size above which one enum's strings may hold at
	// most LargeEnumChars characters.
	LargeEnumValues = 250
	// LargeEnumChars bounds the strings of one enum of more than
	// LargeEnumValues values.
	LargeEnumChars = 7500
)

// unsupportedKeywords are the JSON Schema keywords the Task API rejects.
var unsupportedKeywords = map[string]bool{
	"contains": true, "format": true, "maxContains": true, "maxItems": true,
	"maxLength": true, "maxProperties": true, "maximum": true, "minContains": true,
	"minItems": true, "minLength": true, "minimum": true, "minProperties": true,
	"multipleOf": true, "pattern": true, "patternProperties": true,
	"propertyNames": true, "uniqueItems": true, "unevaluatedItems": true,
	"unevaluatedProperties": true,
}

// knownKeywords are the other JSON Schema keywords (draft 2020-12, and the
// older drafts' definitions, dependencies and additionalItems). A keyword
// in none of the lists is most likely a typo (descripton): it is ignored by
// the validator, so it is reported as a warning.
var knownKeywords = map[string]bool{
	"type": true, "description": true, "title": true, "enum": true, "const": true,
	"properties": true, "required": true, "additionalProperties": true, "items": true,
	"anyOf": true, "oneOf": true, "allOf": true, "prefixItems": true, "not": true,
	"$defs": true, "definitions": true, "$ref": true, "$schema": true, "$id": true,
	"$anchor": true, "$comment": true, "$dynamicRef": true, "$dynamicAnchor": true,
	"$vocabulary": true, "$recursiveRef": true, "$recursiveAnchor": true,
	"default": true, "examples": true, "readOnly": true, "writeOnly": true,
	"deprecated": true, "if": true, "then": true, "else": true,
	"dependentRequired": true, "dependentSchemas": true, "dependencies": true,
	"additionalItems": true, "contentEncoding": true, "contentMediaType": true,
	"contentSchema": true, "exclusiveMinimum": true, "exclusiveMaximum": true,
}

// basisFieldNames are output field names that repeat what the basis of every
// run already holds; the API warns about them.
var basisFieldNames = map[string]bool{
	"citations": true, "confidence": true, "evidence": true, "reasoning": true,
	"source": true, "sources": true, "source_urls": true,
}

// jsonTypes are the values of the type keyword.
var jsonTypes = map[string]bool{
	"string": true, "number": true, "integer": true, "boolean": true,
	"object": true, "array": true, "null": true,
}

// ValidateTaskSpec checks a task spec against the Task API's rules for
// output and input schemas. Problems that the API rejects come back together
// in one error (errors.Join), each naming its JSON path and wrapping
// api.ErrInvalid; problems it only warns about come back as warnings of type
// spec_validation_warning.
func ValidateTaskSpec(spec api.TaskSpec) (warnings []api.Warning, err error) {
	return validateTaskSpec(spec, false)
}

// validateTaskSpec is ValidateTaskSpec; strict makes the schema parts no
// value can match (an enum value of another type than the declared one, a
// required property that additionalProperties: false forbids) problems
// instead of warnings. The Task API accepts such specs, so the engine
// only warns; a pipeline refuses them before it submits a row.
func validateTaskSpec(spec api.TaskSpec, strict bool) (warnings []api.Warning, err error) {
	c := &specChecker{strict: strict}

	// The whole spec has a size limit of its own.
	// A spec that cannot be encoded holds invalid JSON, reported below.
	if b, mErr := json.Marshal(spec); mErr == nil && len(b) > MaxSpecChars {
		c.fail("task_spec", "is %d characters long, more than %d", len(b), MaxSpecChars)
	}

	// The output schema may be json, text or auto.
	c.checkSchema("output_schema", spec.OutputSchema, true)

	// The input schema may be absent, json or text.
	if spec.InputSchema != nil {
		if spec.InputSchema.Type == api.SchemaAuto {
			c.fail("input_schema.type", "must be json or text, not auto")
		} else {
			c.checkSchema("input_schema", *spec.InputSchema, false)
		}
	}
	return c.warnings, errors.Join(c.problems...)
}

// specChecker collects the problems and warnings of one task spec.
type specChecker struct {
	problems []error
	warnings []api.Warning
	// strict makes unmatchable schema parts problems; see validateTaskSpec.
	strict bool
}

// fail records a problem at path.
func (c *specChecker) fail(path, format string, args ...any) {
	msg := path + ": " + fmt.Sprintf(format, args...)
	c.problems = append(c.problems,
		api.Errorf(api.ErrInvalid, "%s", msg).WithDetail(map[string]any{"path": path}))
}

// warn records a spec validation warning at path.
func (c *specChecker) warn(path, format string, args ...any) {
	c.warnings = append(c.warnings, api.Warning{
		Type:    api.WarningSpec,
		Message: path + ": " + fmt.Sprintf(format, args...),
		Detail:  map[string]any{"path": path},
	})
}

// unmatchable records a part of a schema that no value can match: a
// problem when the checker is strict, else a warning.
func (c *specChecker) unmatchable(path, format string, args ...any) {
	if c.strict {
		c.fail(path, format, args...)
		return
	}
	c.warn(path, format, args...)
}

// checkSchema checks one of the two schemas of a spec.
func (c *specChecker) checkSchema(path string, s api.Schema, output bool) {
	switch s.Type {
	case api.SchemaText:
		if len(s.JSONSchema) > 0 {
			c.fail(path+".json_schema", "not allowed when type is text")
		}
	case api.SchemaAuto:
		if len(s.JSONSchema) > 0 {
			c.fail(path+".json_schema", "not allowed when type is auto")
		}
	case api.SchemaJSON:
		c.checkJSONSchema(path+".json_schema", s.JSONSchema, output)
	default:
		c.fail(path+".type", "must be json, text or auto, not %q", s.Type)
	}
}

// checkJSONSchema checks the json_schema of a json schema.
func (c *specChecker) checkJSONSchema(path string, raw json.RawMessage, output bool) {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		c.fail(path, "must be present when type is json")
		return
	}
	doc, err := decodeJSON(raw)
	if err != nil {
		c.fail(path, "is not valid JSON: %v", err)
		return
	}

	// The root is an object with properties and no anyOf.
	root, ok := doc.(map[string]any)
	if !ok {
		c.fail(path, "must be a JSON object")
		return
	}
	if t, _ := root["type"].(string); t != "object" {
		c.fail(path+".type", "the root must have type object")
	}
	props, ok := root["properties"].(map[string]any)
	if !ok {
		c.fail(path+".properties", "the root must have properties")
	}
	if _, ok := root["anyOf"]; ok {
		c.fail(path+".anyOf", "not allowed at the root")
	}
	if output {
		for _, name := range sortedKeys(props) {
			if basisFieldNames[name] {
				c.warn(path+".properties."+name,
					"the basis of every run already gives %s; name the field otherwise", name)
			}
		}
	}

	// Walk every subschema, then check the totals.
	w := &schemaWalker{c: c}
	w.walk(path, root, 0, false)
	if w.properties > MaxProperties {
		c.fail(path, "declares %d properties, more than %d", w.properties, MaxProperties)
	}
	if w.stringChars > MaxStringChars {
		c.fail(path, "names, descriptions and enum strings total %d characters, more than %d",
			w.stringChars, MaxStringChars)
	}
	if w.enumValues > MaxEnumValues {
		c.fail(path, "has %d enum values, more than %d", w.enumValues, MaxEnumValues)
	}
}

// schemaWalker visits the subschemas of one JSON schema and counts what the
// API limits.
type schemaWalker struct {
	c           *specChecker
	properties  int
	stringChars int
	enumValues  int
	tooDeep     bool
}

// walk checks the schema node at path. objects is the number of object
// schemas enclosing it; inUnion says node is a branch of anyOf, where a null
// type is allowed.
func (w *schemaWalker) walk(path string, node any, objects int, inUnion bool) {
	m, ok := node.(map[string]any)
	if !ok {
		w.c.fail(path, "must be a schema object")
		return
	}

	// Every keyword of this node, in a stable order.
	isObject := schemaIsObject(m)
	if isObject {
		objects++
		if objects > MaxNestingDepth && !w.tooDeep {
			w.tooDeep = true
			w.c.fail(path, "objects nest %d levels deep, more than %d", objects, MaxNestingDepth)
		}
	}
	for _, key := range sortedKeys(m) {
		v := m[key]
		kpath := path + "." + key
		if unsupportedKeywords[key] {
			w.c.fail(kpath, "unsupported keyword")
			continue
		}
		if !knownKeywords[key] && !strings.HasPrefix(key, "x-") {
			w.c.warn(kpath, "unknown keyword %q, ignored%s", key, didYouMean(key))
			continue
		}
		switch key {
		case "type":
			w.checkType(kpath, v, inUnion)
		case "description", "title":
			s, ok := v.(string)
			if !ok {
				w.c.fail(kpath, "must be a string")
			}
			w.stringChars += len(s)
		case "enum":
			w.checkEnum(kpath, v)
			if values, ok := v.([]any); ok {
				for i, e := range values {
					w.checkValueType(fmt.Sprintf("%s.%d", kpath, i), e, m["type"])
				}
			}
		case "const":
			if s, ok := v.(string); ok {
				w.stringChars += len(s)
			}
			w.checkValueType(kpath, v, m["type"])
		case "properties":
			w.walkProperties(kpath, v, objects)
		case "required":
			w.checkRequired(kpath, v, m)
		case "additionalProperties":
			if sub, ok := v.(map[string]any); ok {
				w.walk(kpath, sub, objects, false)
			} else if _, ok := v.(bool); !ok {
				w.c.fail(kpath, "must be a boolean or a schema object")
			}
		case "items":
			w.walk(kpath, v, objects, false)
		case "anyOf", "oneOf", "allOf", "prefixItems":
			w.walkList(kpath, v, objects, key == "anyOf")
		case "not":
			w.walk(kpath, v, objects, false)
		case "$defs", "definitions":
			w.walkDefinitions(kpath, v)
		}
	}

	// Objects should close their property set and require every property.
	if isObject {
		if ap, ok := m["additionalProperties"].(bool); !ok || ap {
			w.c.warn(path, "object does not set additionalProperties: false")
		}
		props, _ := m["properties"].(map[string]any)
		req := map[string]bool{}
		if list, ok := m["required"].([]any); ok {
			for _, r := range list {
				if s, ok := r.(string); ok {
					req[s] = true
				}
			}
		}
		var missing []string
		for _, name := range sortedKeys(props) {
			if !req[name] {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			w.c.warn(path+".required", "properties not in required: %s",
				strings.Join(missing, ", "))
		}
	}
}

// checkType checks the type keyword: a known type name, or a union of them.
func (w *schemaWalker) checkType(path string, v any, inUnion bool) {
	switch t := v.(type) {
	case string:
		if !jsonTypes[t] {
			w.c.fail(path, "unknown type %q", t)
		} else if t == "null" && !inUnion {
			w.c.fail(path, "null is only allowed inside a union (anyOf or a type array)")
		}
	case []any:
		if len(t) == 0 {
			w.c.fail(path, "must not be an empty array")
		}
		nonNull := 0
		for i, e := range t {
			s, ok := e.(string)
			if !ok || !jsonTypes[s] {
				w.c.fail(fmt.Sprintf("%s.%d", path, i), "unknown type %v", e)
				continue
			}
			if s != "null" {
				nonNull++
			}
		}
		if len(t) > 0 && nonNull == 0 && !inUnion {
			w.c.fail(path, "null is only allowed inside a union with another type")
		}
	default:
		w.c.fail(path, "must be a type name or an array of type names")
	}
}

// checkEnum counts enum values and bounds a large enum's strings.
func (w *schemaWalker) checkEnum(path string, v any) {
	values, ok := v.([]any)
	if !ok {
		w.c.fail(path, "must be an array")
		return
	}
	if len(values) == 0 {
		w.c.fail(path, "must not be empty")
	}
	chars := 0
	for _, e := range values {
		if s, ok := e.(string); ok {
			chars += len(s)
		}
	}
	w.enumValues += len(values)
	w.stringChars += chars
	if len(values) > LargeEnumValues && chars > LargeEnumChars {
		w.c.fail(path, "has %d values totalling %d characters; enums of more than %d values "+
			"may total at most %d", len(values), chars, LargeEnumValues, LargeEnumChars)
	}
}

// walkProperties visits the properties of an object schema.
func (w *schemaWalker) walkProperties(path string, v any, objects int) {
	props, ok := v.(map[string]any)
	if !ok {
		w.c.fail(path, "must be an object")
		return
	}
	for _, name := range sortedKeys(props) {
		w.properties++
		w.stringChars += len(name)
		w.walk(path+"."+name, props[name], objects, false)
	}
}

// checkRequired checks that required is a list of strings naming
// properties of node, the schema it belongs to. A name properties does not
// define is unmatchable when additionalProperties is false, and likely a
// typo otherwise.
func (w *schemaWalker) checkRequired(path string, v any, node map[string]any) {
	list, ok := v.([]any)
	if !ok {
		w.c.fail(path, "must be an array of property names")
		return
	}
	props, _ := node["properties"].(map[string]any)
	closed := node["additionalProperties"] == false
	for i, e := range list {
		epath := fmt.Sprintf("%s.%d", path, i)
		name, ok := e.(string)
		switch _, defined := props[name]; {
		case !ok:
			w.c.fail(epath, "must be a string")
		case defined:
		case closed:
			w.c.unmatchable(epath, "%q is not a property, and additionalProperties: false "+
				"forbids any other; no value can match", name)
		default:
			w.c.warn(epath, "%q is not a property", name)
		}
	}
}

// checkValueType checks that an enum or const value has one of the types
// the schema declares (typ, the value of its type keyword, if any): a value
// of another type can never be produced or accepted.
func (w *schemaWalker) checkValueType(path string, value, typ any) {
	var types []string
	switch t := typ.(type) {
	case string:
		types = []string{t}
	case []any:
		for _, e := range t {
			if s, ok := e.(string); ok {
				types = append(types, s)
			}
		}
	}
	if len(types) == 0 {
		return
	}
	for _, t := range types {
		if valueHasType(value, t) {
			return
		}
	}
	b, _ := json.Marshal(value)
	w.c.unmatchable(path, "%s is not of the declared type %s", b, strings.Join(types, " or "))
}

// valueHasType reports whether a decoded JSON value (numbers as
// json.Number) is of JSON Schema type t. As in JSON Schema, an integer is
// any number without a fraction: 2.0 is one.
func valueHasType(v any, t string) bool {
	switch x := v.(type) {
	case nil:
		return t == "null"
	case bool:
		return t == "boolean"
	case string:
		return t == "string"
	case json.Number:
		if t == "number" {
			return true
		}
		r, ok := new(big.Rat).SetString(x.String())
		return t == "integer" && ok && r.IsInt()
	case map[string]any:
		return t == "object"
	case []any:
		return t == "array"
	}
	return false
}

// didYouMean suggests the known keyword an unknown one is a typo of, as
// " (did you mean description?)", or "" when none is close.
func didYouMean(key string) string {
	best, bestDist := "", 3
	for k := range knownKeywords {
		if d := editDistance(strings.ToLower(key), strings.ToLower(k)); d < bestDist ||
			(d == bestDist && k < best) {
			best, bestDist = k, d
		}
	}
	for k := range unsupportedKeywords {
		if d := editDistance(strings.ToLower(key), strings.ToLower(k)); d < bestDist ||
			(d == bestDist && k < best) {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + best + "?)"
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// walkList visits the schemas of anyOf and its kin.
func (w *schemaWalker) walkList(path string, v any, objects int, union bool) {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		w.c.fail(path, "must be a non-empty array of schemas")
		return
	}
	for i, sub := range list {
		w.walk(fmt.Sprintf("%s.%d", path, i), sub, objects, union)
	}
}

// walkDefinitions visits $defs. A definition's depth depends on where it is
// referenced; it is checked as if it stood at the root.
func (w *schemaWalker) walkDefinitions(path string, v any) {
	defs, ok := v.(map[string]any)
	if !ok {
		w.c.fail(path, "must be an object")
		return
	}
	for _, name := range sortedKeys(defs) {
		w.stringChars += len(name)
		w.walk(path+"."+name, defs[name], 0, false)
	}
}

// schemaIsObject reports whether m describes an object: type object (alone
// or in a union) or properties.
func schemaIsObject(m map[string]any) bool {
	if _, ok := m["properties"]; ok {
		return true
	}
	switch t := m["type"].(type) {
	case string:
		return t == "object"
	case []any:
		for _, e := range t {
			if e == "object" {
				return true
			}
		}
	}
	return false
}

// SpecHash returns a stable hash of a resolved task spec: the hex SHA-256 of
// its canonical JSON (object keys sorted, insignificant space removed), so
// that equal specs written differently hash alike.
func SpecHash(spec api.TaskSpec) string {
	b, err := json.Marshal(spec)
	if err == nil {
		b, err = canonicalJSON(b)
	}
	if err != nil {
		// A spec that cannot be encoded still gets a stable hash of its
		// printed form; it will fail validation anyway.
		b = fmt.Appendf(nil, "%#v", spec)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// canonicalJSON re-encodes a JSON document with sorted keys and numbers kept
// as written.
func canonicalJSON(b []byte) ([]byte, error) {
	v, err := decodeJSON(b)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// decodeJSON decodes one JSON document, keeping numbers as json.Number and
// rejecting trailing data.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON document")
	}
	return v, nil
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
