package pipeline

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/specs"
)

// Metadata keys the pipeline puts on every run, so that a group's runs can
// be matched back to source rows after a crash.
const (
	MetaKey         = "taskpipe_key"
	MetaFingerprint = "taskpipe_fp"
	MetaSpec        = "taskpipe_spec"
	// maxMetaValue is the API's limit on a metadata value.
	maxMetaValue = 512
)

// mapper turns source rows into keys and task inputs, and checks inputs
// against the task's input schema.
type mapper struct {
	keyIdx  []int
	keyCols []specs.Column
	// fields are the input fields in name order; fieldIdx their source
	// column (-1 for a constant, whose value is in consts).
	fields   []string
	fieldIdx []int
	consts   []any
	// textInput is set when the input schema is text and one field is
	// mapped: the input is then that value as a string.
	textInput bool
	schema    *specs.Schema
	// specChars is the length of the task spec's JSON, which counts with
	// each input against the Task API's size limit.
	specChars int
}

// MaxSpecAndInputChars is the Task API's limit on a run's task spec and
// input together; a longer row is written invalid_input, not submitted.
const MaxSpecAndInputChars = 25000

// newMapper resolves key columns and the mapping against the source's
// columns. An empty mapping maps every column onto the field of the same
// name. Every problem is returned at once, each naming its field.
func newMapper(cols []Column, key []string, mapping map[string]specs.MappingEntry,
	spec api.TaskSpec) (*mapper, error) {
	idx := map[string]int{}
	for i, c := range cols {
		idx[c.Name] = i
	}
	var errs []error
	m := &mapper{}
	if b, err := json.Marshal(spec); err == nil {
		m.specChars = len(b)
	}

	// Key columns: at least one, each present in the source.
	if len(key) == 0 {
		errs = append(errs, errors.New("key: must name at least one source column"))
	}
	for _, k := range key {
		i, ok := idx[k]
		if !ok {
			errs = append(errs, fmt.Errorf("key: source has no column %q (it has %s)", k, columnList(cols)))
			continue
		}
		m.keyIdx = append(m.keyIdx, i)
		m.keyCols = append(m.keyCols, specs.Column{Name: k, Type: specs.SQLType(cols[i].DuckDBType)})
	}

	// Mapped fields: default to every column under its own name.
	if len(mapping) == 0 {
		mapping = map[string]specs.MappingEntry{}
		for _, c := range cols {
			mapping[c.Name] = specs.MappingEntry{Column: c.Name}
		}
	}
	for _, field := range slices.Sorted(maps.Keys(mapping)) {
		e := mapping[field]
		if e.HasValue {
			m.fields = append(m.fields, field)
			m.fieldIdx = append(m.fieldIdx, -1)
			m.consts = append(m.consts, e.Value)
			continue
		}
		i, ok := idx[e.Column]
		if !ok {
			errs = append(errs, fmt.Errorf("mapping.%s: source has no column %q (it has %s)",
				field, e.Column, columnList(cols)))
			continue
		}
		m.fields = append(m.fields, field)
		m.fieldIdx = append(m.fieldIdx, i)
		m.consts = append(m.consts, nil)
	}

	// The input schema, when the spec has a JSON one, checks every input.
	if in := spec.InputSchema; in != nil {
		switch in.Type {
		case api.SchemaJSON:
			s, err := specs.CompileSchema(in.JSONSchema)
			if err != nil {
				errs = append(errs, fmt.Errorf("task_spec.input_schema: %w", err))
			}
			m.schema = s
		case api.SchemaText:
			if len(mapping) != 1 {
				errs = append(errs, fmt.Errorf(
					"mapping: a text input schema takes exactly one mapped field, not %d", len(mapping)))
			}
			m.textInput = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// columnList names the columns of a source for error messages.
func columnList(cols []Column) string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}

// mappedRow is one source row after mapping.
type mappedRow struct {
	Key string
	// KeyValues are the key column values, in key order.
	KeyValues []any
	// Input is the task input as JSON; Fingerprint its hash.
	Input       json.RawMessage
	Fingerprint string
	// Invalid says why the row cannot become a run; empty when it can.
	Invalid string
	// NullKey is set when a key column is NULL (and Invalid says so).
	NullKey bool
}

// mapRow builds the key and input of one source row and validates the
// input. A row that breaks the input schema is returned with Invalid set,
// never as an error: one bad row must not stop the batch.
func (m *mapper) mapRow(row []any) mappedRow {
	var r mappedRow
	r.KeyValues = make([]any, len(m.keyIdx))
	var nulls []string
	for i, ki := range m.keyIdx {
		r.KeyValues[i] = row[ki]
		if row[ki] == nil {
			nulls = append(nulls, strconv.Quote(m.keyCols[i].Name))
		}
	}
	r.Key = keyString(r.KeyValues)
	if len(nulls) > 0 {
		r.NullKey = true
		what := "key column " + nulls[0] + " is"
		if len(nulls) > 1 {
			what = "key columns " + strings.Join(nulls, ", ") + " are"
		}
		r.Invalid = what + " NULL (rows with a NULL key cannot be told apart: they share " +
			"this one row; give every row a key)"
	}

	// Build the input: an object of the mapped fields, or the single value
	// as text for a text input schema.
	var input any
	if m.textInput {
		input = textValue(m.value(row, 0))
	} else {
		obj := make(map[string]any, len(m.fields))
		for i, f := range m.fields {
			obj[f] = m.value(row, i)
		}
		input = obj
	}
	b, err := json.Marshal(input)
	if err != nil {
		r.Invalid = fmt.Sprintf("encode input: %v", err)
		return r
	}
	r.Input = b
	sum := sha256.Sum256(b)
	r.Fingerprint = hex.EncodeToString(sum[:16])
	if r.Invalid != "" {
		return r
	}
	if n := len(b) + m.specChars; n > MaxSpecAndInputChars {
		r.Invalid = fmt.Sprintf("input is %d characters; with the task spec's %d that is more than the "+
			"Task API's limit of %d", len(b), m.specChars, MaxSpecAndInputChars)
		return r
	}
	if m.schema != nil {
		if err := m.schema.ValidateJSON(b); err != nil {
			r.Invalid = "input does not match the input schema: " + err.Error()
		}
	}
	return r
}

// value is the value of mapped field i for row.
func (m *mapper) value(row []any, i int) any {
	if m.fieldIdx[i] < 0 {
		return m.consts[i]
	}
	return row[m.fieldIdx[i]]
}

// textValue renders a value as the text of a text input.
func textValue(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// keyString is the identity of a row: a single string key is itself, any
// other key its JSON (an array for several columns).
func keyString(values []any) string {
	if len(values) == 1 {
		if s, ok := values[0].(string); ok {
			return s
		}
		b, _ := json.Marshal(values[0])
		return string(b)
	}
	b, _ := json.Marshal(values)
	return string(b)
}

// decodeKeyValues parses the JSON stored for a row's key values.
func decodeKeyValues(raw string) ([]any, error) {
	dec := json.NewDecoder(bytes.NewReader([]byte(raw)))
	dec.UseNumber()
	var vals []any
	if err := dec.Decode(&vals); err != nil {
		return nil, fmt.Errorf("decode key values: %w", err)
	}
	return vals, nil
}

// metaKey is the key as carried in run metadata: itself when short enough,
// else a hash of it (matched the same way on reconcile).
func metaKey(key string) string {
	if len(key) <= maxMetaValue {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// runMetadata is the metadata of the run serving a row.
func runMetadata(key, fingerprint, specHash string) api.Metadata {
	return api.Metadata{
		MetaKey:         metaKey(key),
		MetaFingerprint: fingerprint,
		MetaSpec:        shortHash(specHash),
	}
}

// shortHash is the prefix of a spec hash carried in metadata.
func shortHash(h string) string {
	if len(h) > 16 {
		return h[:16]
	}
	return h
}
