package specs

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/taskpipe/taskpipe/api"
)

// Kind is the SQL kind of a column type.
type Kind int

// The kinds of column types. Every JSON Schema maps onto these; KindSQL
// carries a type named by a source (a key column's DATE, DECIMAL(18,2), ...)
// unchanged.
const (
	KindVarchar Kind = iota + 1
	KindBigint
	KindDouble
	KindBoolean
	KindEnum
	KindList
	KindStruct
	KindJSON
	KindTimestampTZ
	KindSQL
)

// String names the kind as SQL does.
func (k Kind) String() string {
	switch k {
	case KindVarchar:
		return "VARCHAR"
	case KindBigint:
		return "BIGINT"
	case KindDouble:
		return "DOUBLE"
	case KindBoolean:
		return "BOOLEAN"
	case KindEnum:
		return "ENUM"
	case KindList:
		return "LIST"
	case KindStruct:
		return "STRUCT"
	case KindJSON:
		return "JSON"
	case KindTimestampTZ:
		return "TIMESTAMPTZ"
	case KindSQL:
		return "SQL"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Type is the SQL type of a column or of a part of one.
type Type struct {
	Kind Kind
	// Nullable says the value may be null: the schema allows null, or the
	// property is not required.
	Nullable bool
	// Enum holds the allowed values of a KindEnum type, in schema order.
	Enum []string
	// Elem is the element type of a KindList type.
	Elem *Type
	// Fields are the fields of a KindStruct type, in schema order.
	Fields []Field
	// SQL is the type name of a KindSQL type, written as the source gave it.
	SQL string
}

// Field is one named field of a STRUCT, or one column of a table.
type Field struct {
	Name string
	Type Type
}

// Column is one column of a table.
type Column = Field

// Simple types.
var (
	Varchar     = Type{Kind: KindVarchar}
	Bigint      = Type{Kind: KindBigint}
	Double      = Type{Kind: KindDouble}
	Boolean     = Type{Kind: KindBoolean}
	JSONType    = Type{Kind: KindJSON}
	TimestampTZ = Type{Kind: KindTimestampTZ}
)

// ListOf returns the type LIST(elem).
func ListOf(elem Type) Type { return Type{Kind: KindList, Elem: &elem} }

// StructOf returns the type STRUCT(fields...).
func StructOf(fields ...Field) Type { return Type{Kind: KindStruct, Fields: fields} }

// SQLType returns the type a source names, such as "DATE" or "INTEGER". The
// four simple names map onto their kinds; any other is kept as written.
func SQLType(name string) Type {
	switch strings.ToUpper(strings.TrimSpace(name)) {
	case "VARCHAR", "TEXT", "STRING":
		return Varchar
	case "BIGINT", "INT8", "LONG":
		return Bigint
	case "DOUBLE", "FLOAT8":
		return Double
	case "BOOLEAN", "BOOL":
		return Boolean
	case "JSON":
		return JSONType
	case "TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE":
		return TimestampTZ
	}
	return Type{Kind: KindSQL, SQL: name}
}

// OrNull returns t marked nullable.
func (t Type) OrNull() Type {
	t.Nullable = true
	return t
}

// DuckDB renders t as a DuckDB column type. ENUM types render as VARCHAR
// unless enums is true, in which case they become DuckDB ENUM types (fixed
// value sets that DuckDB checks and stores compactly).
func (t Type) DuckDB(enums bool) string {
	var sb strings.Builder
	t.writeDuckDB(&sb, enums)
	return sb.String()
}

// String renders t as DuckDB would with enums as VARCHAR.
func (t Type) String() string { return t.DuckDB(false) }

func (t Type) writeDuckDB(sb *strings.Builder, enums bool) {
	switch t.Kind {
	case KindEnum:
		if !enums || len(t.Enum) == 0 {
			sb.WriteString("VARCHAR")
			return
		}
		sb.WriteString("ENUM(")
		for i, v := range t.Enum {
			if i > 0 {
				sb.WriteString(", ")
			}
			sb.WriteString(QuoteLiteral(v))
		}
		sb.WriteString(")")
	case KindList:
		elem := JSONType
		if t.Elem != nil {
			elem = *t.Elem
		}
		elem.writeDuckDB(sb, enums)
		sb.WriteString("[]")
	case KindStruct:
		if len(t.Fields) == 0 {
			sb.WriteString("JSON")
			return
		}
		sb.WriteString("STRUCT(")
		for i, f := range t.Fields {
			if i > 0 {
				sb.WriteString(", ")
			}
			sb.WriteString(QuoteIdent(f.Name))
			sb.WriteString(" ")
			f.Type.writeDuckDB(sb, enums)
		}
		sb.WriteString(")")
	case KindSQL:
		sb.WriteString(t.SQL)
	default:
		sb.WriteString(t.Kind.String())
	}
}

// QuoteIdent quotes a SQL identifier for DuckDB.
func QuoteIdent(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// QuoteLiteral quotes a SQL string literal.
func QuoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// maxRefDepth bounds $ref resolution, so recursive schemas end as JSON.
const maxRefDepth = 16

// typeMapper maps the subschemas of one JSON schema, resolving local $refs.
type typeMapper struct {
	root *orderedObject
}

// TypeOfSchema maps a JSON schema (the json_schema of a task spec, or any
// part of one) onto a column type.
func TypeOfSchema(raw json.RawMessage) (Type, error) {
	doc, err := decodeOrdered(raw)
	if err != nil {
		return Type{}, fmt.Errorf("decode json schema: %w", err)
	}
	root, _ := doc.(*orderedObject)
	m := typeMapper{root: root}
	return m.typeOf(doc, 0), nil
}

// typeOf maps one schema node. Anything that cannot be typed becomes JSON.
func (m typeMapper) typeOf(node any, refs int) Type {
	o, ok := node.(*orderedObject)
	if !ok {
		return JSONType.OrNull()
	}

	// A reference stands for the schema it names.
	if ref, ok := o.values["$ref"].(string); ok {
		target := m.resolve(ref)
		if target == nil || refs >= maxRefDepth {
			return JSONType.OrNull()
		}
		return m.typeOf(target, refs+1)
	}

	// Unions: null branches make the type nullable; the others must agree.
	if branches, ok := o.values["anyOf"].([]any); ok {
		return m.unionOf(branches, refs)
	}
	if branches, ok := o.values["oneOf"].([]any); ok {
		return m.unionOf(branches, refs)
	}

	// Enumerations and constants type by their values.
	if values, ok := o.values["enum"].([]any); ok {
		return enumType(values)
	}
	if v, ok := o.get("const"); ok {
		return enumType([]any{v})
	}

	// Otherwise the type keyword decides, or properties and items do.
	var names []string
	nullable := false
	switch t := o.values["type"].(type) {
	case string:
		names = []string{t}
	case []any:
		for _, e := range t {
			if s, ok := e.(string); ok {
				names = append(names, s)
			}
		}
	default:
		if _, ok := o.get("properties"); ok {
			names = []string{"object"}
		} else if _, ok := o.get("items"); ok {
			names = []string{"array"}
		}
	}
	var types []Type
	for _, name := range names {
		if name == "null" {
			nullable = true
			continue
		}
		types = append(types, m.namedType(name, o, refs))
	}
	t := mergeTypes(types)
	t.Nullable = t.Nullable || nullable
	return t
}

// namedType maps a schema node whose type keyword names one type.
func (m typeMapper) namedType(name string, o *orderedObject, refs int) Type {
	switch name {
	case "string":
		return Varchar
	case "integer":
		return Bigint
	case "number":
		return Double
	case "boolean":
		return Boolean
	case "array":
		items, ok := o.get("items")
		if !ok {
			return ListOf(JSONType.OrNull())
		}
		return ListOf(m.typeOf(items, refs))
	case "object":
		props, _ := o.values["properties"].(*orderedObject)
		if props == nil || len(props.keys) == 0 {
			return JSONType
		}
		required := requiredSet(o)
		fields := make([]Field, 0, len(props.keys))
		for _, name := range props.keys {
			ft := m.typeOf(props.values[name], refs)
			ft.Nullable = ft.Nullable || !required[name]
			fields = append(fields, Field{Name: name, Type: ft})
		}
		return StructOf(fields...)
	}
	return JSONType
}

// unionOf maps the branches of anyOf or oneOf.
func (m typeMapper) unionOf(branches []any, refs int) Type {
	var types []Type
	nullable := false
	for _, b := range branches {
		if isNullSchema(b) {
			nullable = true
			continue
		}
		types = append(types, m.typeOf(b, refs))
	}
	t := mergeTypes(types)
	t.Nullable = t.Nullable || nullable
	return t
}

// resolve finds the schema a local reference (#/$defs/x, #/definitions/x,
// or any JSON pointer into the document) names.
func (m typeMapper) resolve(ref string) any {
	if m.root == nil || !strings.HasPrefix(ref, "#") {
		return nil
	}
	var node any = m.root
	for _, tok := range strings.Split(strings.TrimPrefix(ref, "#"), "/")[1:] {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		o, ok := node.(*orderedObject)
		if !ok {
			return nil
		}
		if node, ok = o.values[tok]; !ok {
			return nil
		}
	}
	return node
}

// mergeTypes combines the non-null alternatives of a union: one type stays
// itself, integer with number widens to DOUBLE, anything else is JSON.
func mergeTypes(types []Type) Type {
	switch len(types) {
	case 0:
		return JSONType.OrNull()
	case 1:
		return types[0]
	}
	nullable := false
	numeric := true
	for _, t := range types {
		nullable = nullable || t.Nullable
		if t.Kind != KindBigint && t.Kind != KindDouble {
			numeric = false
		}
	}
	if numeric {
		return Type{Kind: KindDouble, Nullable: nullable}
	}
	allSame := true
	for _, t := range types[1:] {
		if t.DuckDB(true) != types[0].DuckDB(true) {
			allSame = false
		}
	}
	if allSame {
		t := types[0]
		t.Nullable = nullable
		return t
	}
	return Type{Kind: KindJSON, Nullable: nullable}
}

// enumType maps the values of an enum: strings make an ENUM, integers a
// BIGINT, numbers a DOUBLE, booleans a BOOLEAN, a mix JSON. A null value
// makes the type nullable.
func enumType(values []any) Type {
	var strs []string
	ints, nums, bools, other, nullable := 0, 0, 0, 0, false
	for _, v := range values {
		switch x := v.(type) {
		case nil:
			nullable = true
		case string:
			strs = append(strs, x)
		case json.Number:
			if _, err := x.Int64(); err == nil {
				ints++
			} else {
				nums++
			}
		case bool:
			bools++
		default:
			other++
		}
	}
	n := len(values)
	if nullable {
		n--
	}
	var t Type
	switch {
	case n == 0:
		t = JSONType
	case len(strs) == n:
		t = Type{Kind: KindEnum, Enum: dedupe(strs)}
	case ints == n:
		t = Bigint
	case ints+nums == n:
		t = Double
	case bools == n:
		t = Boolean
	default:
		t = JSONType
	}
	t.Nullable = nullable
	return t
}

// dedupe drops repeated strings, keeping the first of each.
func dedupe(values []string) []string {
	seen := make(map[string]bool, len(values))
	out := values[:0:0]
	for _, v := range values {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// isNullSchema reports whether a union branch only allows null.
func isNullSchema(node any) bool {
	o, ok := node.(*orderedObject)
	if !ok {
		return false
	}
	switch t := o.values["type"].(type) {
	case string:
		return t == "null"
	case []any:
		return len(t) == 1 && t[0] == "null"
	}
	return false
}

// requiredSet returns the names listed in an object schema's required.
func requiredSet(o *orderedObject) map[string]bool {
	set := map[string]bool{}
	list, _ := o.values["required"].([]any)
	for _, v := range list {
		if s, ok := v.(string); ok {
			set[s] = true
		}
	}
	return set
}

// OutputColumns returns the output columns of an output schema: one column
// per top-level property of a json schema (in schema order), a single
// `output` VARCHAR for text and a single `output` JSON for auto.
func OutputColumns(s api.Schema) ([]Column, error) {
	switch s.Type {
	case api.SchemaText:
		return []Column{{Name: "output", Type: Varchar.OrNull()}}, nil
	case api.SchemaAuto:
		return []Column{{Name: "output", Type: JSONType.OrNull()}}, nil
	case api.SchemaJSON:
	default:
		return nil, fmt.Errorf("map output schema: unknown type %q", s.Type)
	}
	t, err := TypeOfSchema(s.JSONSchema)
	if err != nil {
		return nil, fmt.Errorf("map output schema: %w", err)
	}
	if t.Kind != KindStruct {
		return nil, fmt.Errorf("map output schema: the root must be an object with properties")
	}
	return t.Fields, nil
}

// Convert turns a decoded JSON value (from encoding/json, numbers as
// float64 or json.Number) into the Go value a sink writes for type t:
// string, int64, float64, bool, []any, map[string]any or, for JSON, the
// value's JSON text as a json.RawMessage (which DuckDB's Appender writes to
// a JSON column as is, where it would encode a string once more). A value that does not fit gives an error naming field.
func (t Type) Convert(field string, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch t.Kind {
	case KindVarchar, KindEnum:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%s: want a string, got %s", field, describe(v))
		}
		return s, nil
	case KindBigint:
		return toInt64(field, v)
	case KindDouble:
		return toFloat64(field, v)
	case KindBoolean:
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("%s: want a boolean, got %s", field, describe(v))
		}
		return b, nil
	case KindList:
		return t.convertList(field, v)
	case KindStruct:
		return t.convertStruct(field, v)
	case KindJSON:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("%s: encode JSON: %w", field, err)
		}
		return json.RawMessage(b), nil
	}
	return v, nil
}

// convertList converts every element of a LIST value.
func (t Type) convertList(field string, v any) (any, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%s: want an array, got %s", field, describe(v))
	}
	elem := JSONType
	if t.Elem != nil {
		elem = *t.Elem
	}
	out := make([]any, len(list))
	for i, e := range list {
		c, err := elem.Convert(field+"."+strconv.Itoa(i), e)
		if err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

// convertStruct converts the fields of a STRUCT value; missing fields become
// null and fields the type does not know are dropped.
func (t Type) convertStruct(field string, v any) (any, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: want an object, got %s", field, describe(v))
	}
	out := make(map[string]any, len(t.Fields))
	for _, f := range t.Fields {
		c, err := f.Type.Convert(field+"."+f.Name, obj[f.Name])
		if err != nil {
			return nil, err
		}
		out[f.Name] = c
	}
	return out, nil
}

// toInt64 converts a JSON number that holds an integer.
func toInt64(field string, v any) (any, error) {
	switch n := v.(type) {
	case json.Number:
		if i, err := n.Int64(); err == nil {
			return i, nil
		}
		f, err := n.Float64()
		if err != nil {
			return nil, fmt.Errorf("%s: %s is not a number", field, n)
		}
		return floatToInt64(field, f)
	case float64:
		return floatToInt64(field, n)
	case int64:
		return n, nil
	case int:
		return int64(n), nil
	}
	return nil, fmt.Errorf("%s: want an integer, got %s", field, describe(v))
}

// floatToInt64 accepts a float that is a whole number within range.
func floatToInt64(field string, f float64) (any, error) {
	if f != math.Trunc(f) || math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, fmt.Errorf("%s: %v is not an integer", field, f)
	}
	if f < -9.223372036854775e18 || f >= 9.223372036854775e18 {
		return nil, fmt.Errorf("%s: %v does not fit a BIGINT", field, f)
	}
	return int64(f), nil
}

// toFloat64 converts a JSON number.
func toFloat64(field string, v any) (any, error) {
	switch n := v.(type) {
	case json.Number:
		f, err := n.Float64()
		if err != nil {
			return nil, fmt.Errorf("%s: %s is not a number", field, n)
		}
		return f, nil
	case float64:
		return n, nil
	case int64:
		return float64(n), nil
	case int:
		return float64(n), nil
	}
	return nil, fmt.Errorf("%s: want a number, got %s", field, describe(v))
}

// describe names the JSON kind of v for error messages.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > 40 {
			x = x[:40] + "..."
		}
		return fmt.Sprintf("string %q", x)
	case json.Number, float64, int, int64:
		return fmt.Sprintf("number %v", x)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
