package specs

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/taskpipe/taskpipe/api"
)

// The fixed columns of every result table, in order. Key columns come before
// them; output columns between processor and basis.
const (
	ColRunID            = "run_id"
	ColStatus           = "status"
	ColError            = "error"
	ColProcessor        = "processor"
	ColBasis            = "basis"
	ColCreatedAt        = "created_at"
	ColFinishedAt       = "finished_at"
	ColInputFingerprint = "input_fingerprint"
	ColSpecHash         = "spec_hash"
)

// StatusInvalidInput is the status of a row whose input could not be built
// from its source row (a missing column, a value the input schema refuses):
// it never became a run, so it has no run_id and its key is its identity.
const StatusInvalidInput = "invalid_input"

// BasisType is the type of the basis column: one entry per output field
// with its reasoning, confidence and citations.
var BasisType = ListOf(StructOf(
	Field{Name: "field", Type: Varchar},
	Field{Name: "reasoning", Type: Varchar.OrNull()},
	Field{Name: "confidence", Type: Varchar.OrNull()},
	Field{Name: "citations", Type: ListOf(StructOf(
		Field{Name: "url", Type: Varchar},
		Field{Name: "title", Type: Varchar.OrNull()},
		Field{Name: "excerpts", Type: ListOf(Varchar).OrNull()},
	)).OrNull()},
)).OrNull()

// Table is the full schema of the table a sink writes: key columns, the
// fixed run columns, the output columns and the trailing bookkeeping
// columns.
//
// Output fields whose names collide (ignoring case, as SQL does) with a
// fixed or key column are an error rather than silently renamed: a user
// renames the field in the schema or the key column in the source. (A
// prefix would make every query against the table guess which was meant.)
type Table struct {
	// Key are the columns that identify a source row, with their types.
	Key []Column
	// Output are the typed output columns (see OutputColumns).
	Output []Column
	// OutputKind is the output schema's type: json, text or auto.
	OutputKind string
	// Enums renders enum outputs as DuckDB ENUM types rather than VARCHAR.
	Enums bool
}

// NewTable builds the table for the given key columns and output schema.
func NewTable(key []Column, output api.Schema) (Table, error) {
	if len(key) == 0 {
		return Table{}, errors.New("build table: at least one key column is needed")
	}
	cols, err := OutputColumns(output)
	if err != nil {
		return Table{}, fmt.Errorf("build table: %w", err)
	}
	t := Table{Key: key, Output: cols, OutputKind: output.Type}
	if err := t.checkNames(); err != nil {
		return Table{}, fmt.Errorf("build table: %w", err)
	}
	return t, nil
}

// checkNames reports every column name that appears twice.
func (t Table) checkNames() error {
	var problems []error
	seen := map[string]string{} // lower-case name -> where it came from
	add := func(name, from string) {
		low := strings.ToLower(name)
		if name == "" {
			problems = append(problems, fmt.Errorf("%s: empty column name", from))
			return
		}
		if prev, ok := seen[low]; ok {
			problems = append(problems,
				fmt.Errorf("%s %q collides with %s; rename one of them", from, name, prev))
			return
		}
		seen[low] = fmt.Sprintf("%s %q", from, name)
	}
	for _, c := range t.Key {
		add(c.Name, "key column")
	}
	for _, c := range fixedHead {
		add(c.Name, "the fixed column")
	}
	for _, c := range fixedTail {
		add(c.Name, "the fixed column")
	}
	for _, c := range t.Output {
		add(c.Name, "output field")
	}
	return errors.Join(problems...)
}

// fixedHead are the fixed columns between the key and the output columns.
var fixedHead = []Column{
	{Name: ColRunID, Type: Varchar.OrNull()},
	{Name: ColStatus, Type: Varchar},
	{Name: ColError, Type: Varchar.OrNull()},
	{Name: ColProcessor, Type: Varchar.OrNull()},
}

// fixedTail are the fixed columns after the output columns.
var fixedTail = []Column{
	{Name: ColBasis, Type: BasisType},
	{Name: ColCreatedAt, Type: TimestampTZ.OrNull()},
	{Name: ColFinishedAt, Type: TimestampTZ.OrNull()},
	{Name: ColInputFingerprint, Type: Varchar.OrNull()},
	{Name: ColSpecHash, Type: Varchar.OrNull()},
}

// Columns returns every column in table order.
func (t Table) Columns() []Column {
	cols := make([]Column, 0, len(t.Key)+len(fixedHead)+len(t.Output)+len(fixedTail))
	cols = append(cols, t.Key...)
	cols = append(cols, fixedHead...)
	cols = append(cols, t.Output...)
	return append(cols, fixedTail...)
}

// ColumnNames returns the names of Columns.
func (t Table) ColumnNames() []string {
	cols := t.Columns()
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.Name
	}
	return names
}

// ColumnDefs renders the column list of a CREATE TABLE, one per line.
func (t Table) ColumnDefs() string {
	var sb strings.Builder
	for i, c := range t.Columns() {
		if i > 0 {
			sb.WriteString(",\n")
		}
		sb.WriteString("  ")
		sb.WriteString(QuoteIdent(c.Name))
		sb.WriteString(" ")
		sb.WriteString(c.Type.DuckDB(t.Enums))
	}
	return sb.String()
}

// DDL returns the CREATE TABLE statement of the table under name (quoted as
// one identifier), for DuckDB. Key columns are not declared a primary key:
// sinks replace rows with set-based DELETE and INSERT, which DuckDB's
// index constraints do not allow within one transaction.
func (t Table) DDL(name string) string {
	return "CREATE TABLE " + QuoteIdent(name) + " (\n" + t.ColumnDefs() + "\n);"
}

// OutputValues decodes the content of a run's output and converts it into
// one Go value per output column, in column order. Empty content (a run
// that did not complete) gives all nulls.
func (t Table) OutputValues(content json.RawMessage) ([]any, error) {
	values := make([]any, len(t.Output))
	trimmed := strings.TrimSpace(string(content))
	if trimmed == "" || trimmed == "null" {
		return values, nil
	}
	switch t.OutputKind {
	case api.SchemaText:
		// Text content is a JSON string; a bare object is kept as its text.
		var s string
		if err := json.Unmarshal(content, &s); err != nil {
			s = trimmed
		}
		values[0] = s
		return values, nil
	case api.SchemaAuto:
		if !json.Valid([]byte(trimmed)) {
			return nil, fmt.Errorf("decode output: content is not valid JSON")
		}
		values[0] = json.RawMessage(trimmed)
		return values, nil
	}

	// A json output is an object; each column takes its field.
	doc, err := decodeJSON(content)
	if err != nil {
		return nil, fmt.Errorf("decode output: %w", err)
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("decode output: content is not an object")
	}
	for i, c := range t.Output {
		v, err := c.Type.Convert(c.Name, obj[c.Name])
		if err != nil {
			return nil, fmt.Errorf("convert output: %w", err)
		}
		values[i] = v
	}
	return values, nil
}
