package specs

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/taskpipe/taskpipe/api"
)

func TestTypeOfSchema(t *testing.T) {
	tests := []struct {
		name, schema, want string
		nullable           bool
	}{
		{"string", `{"type":"string"}`, "VARCHAR", false},
		{"integer", `{"type":"integer"}`, "BIGINT", false},
		{"number", `{"type":"number"}`, "DOUBLE", false},
		{"boolean", `{"type":"boolean"}`, "BOOLEAN", false},
		{"nullable type array", `{"type":["string","null"]}`, "VARCHAR", true},
		{"anyOf with null", `{"anyOf":[{"type":"integer"},{"type":"null"}]}`, "BIGINT", true},
		{"oneOf with null", `{"oneOf":[{"type":"null"},{"type":"boolean"}]}`, "BOOLEAN", true},
		{"integer or number", `{"type":["integer","number"]}`, "DOUBLE", false},
		{"anyOf integer or number", `{"anyOf":[{"type":"integer"},{"type":"number"},{"type":"null"}]}`,
			"DOUBLE", true},
		{"union of different types", `{"type":["string","integer"]}`, "JSON", false},
		{"anyOf different types", `{"anyOf":[{"type":"string"},{"type":"object","properties":{"a":{"type":"string"}}}]}`,
			"JSON", false},
		{"string enum", `{"type":"string","enum":["low","high"]}`, "VARCHAR", false},
		{"enum with null", `{"type":["string","null"],"enum":["a","b",null]}`, "VARCHAR", true},
		{"integer enum", `{"enum":[1,2,3]}`, "BIGINT", false},
		{"number enum", `{"enum":[1,2.5]}`, "DOUBLE", false},
		{"boolean enum", `{"enum":[true]}`, "BOOLEAN", false},
		{"mixed enum", `{"enum":["a",1]}`, "JSON", false},
		{"const string", `{"const":"x"}`, "VARCHAR", false},
		{"array of strings", `{"type":"array","items":{"type":"string"}}`, "VARCHAR[]", false},
		{"array without items", `{"type":"array"}`, "JSON[]", false},
		{"array of arrays", `{"type":"array","items":{"type":"array","items":{"type":"number"}}}`,
			"DOUBLE[][]", false},
		{"nullable array", `{"type":["array","null"],"items":{"type":"integer"}}`, "BIGINT[]", true},
		{"object", `{"type":"object","required":["a"],"properties":{"b":{"type":"integer"},"a":{"type":"string"}}}`,
			`STRUCT("b" BIGINT, "a" VARCHAR)`, false},
		{"object without properties", `{"type":"object"}`, "JSON", false},
		{"object implied by properties", `{"properties":{"x":{"type":"boolean"}}}`,
			`STRUCT("x" BOOLEAN)`, false},
		{"array of objects", `{"type":"array","items":{"type":"object","properties":{"name":{"type":"string"},"tags":{"type":"array","items":{"type":"string"}}}}}`,
			`STRUCT("name" VARCHAR, "tags" VARCHAR[])[]`, false},
		{"ref to defs", `{"type":"object","properties":{"p":{"$ref":"#/$defs/person"}},"$defs":{"person":{"type":"object","properties":{"n":{"type":"string"}}}}}`,
			`STRUCT("p" STRUCT("n" VARCHAR))`, false},
		{"ref to definitions", `{"type":"object","properties":{"p":{"$ref":"#/definitions/n"}},"definitions":{"n":{"type":"integer"}}}`,
			`STRUCT("p" BIGINT)`, false},
		{"recursive ref", `{"type":"object","properties":{"c":{"$ref":"#"}}}`,
			`STRUCT("c" STRUCT("c" STRUCT("c" STRUCT("c" STRUCT("c" STRUCT("c" STRUCT("c" STRUCT("c" STRUCT("c" STRUCT("c" STRUCT("c" STRUCT("c" STRUCT("c" STRUCT("c" STRUCT("c" STRUCT("c" STRUCT("c" JSON)))))))))))))))))`, false},
		{"dangling ref", `{"$ref":"#/$defs/missing"}`, "JSON", true},
		{"only null", `{"type":"null"}`, "JSON", true},
		{"no type", `{"description":"anything"}`, "JSON", true},
		{"quoted field names", `{"type":"object","properties":{"a \"b\"":{"type":"string"}}}`,
			`STRUCT("a ""b""" VARCHAR)`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := TypeOfSchema(json.RawMessage(tc.schema))
			if err != nil {
				t.Fatal(err)
			}
			if got.DuckDB(false) != tc.want {
				t.Errorf("type = %s, want %s", got.DuckDB(false), tc.want)
			}
			if got.Nullable != tc.nullable {
				t.Errorf("nullable = %v, want %v", got.Nullable, tc.nullable)
			}
		})
	}
}

func TestType_DuckDBEnums(t *testing.T) {
	got, err := TypeOfSchema(json.RawMessage(`{"type":"array","items":{"enum":["it's","b","b"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if s := got.DuckDB(true); s != `ENUM('it''s', 'b')[]` {
		t.Errorf("DuckDB(true) = %s", s)
	}
	if !reflect.DeepEqual(got.Elem.Enum, []string{"it's", "b"}) {
		t.Errorf("enum values = %q", got.Elem.Enum)
	}
}

func TestOutputColumns(t *testing.T) {
	cols, err := OutputColumns(api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(
		`{"type":"object","required":["z","a"],"properties":{"z":{"type":"integer"},
		 "a":{"type":["string","null"]},"m":{"type":"boolean"}}}`)})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cols {
		got = append(got, c.Name+" "+c.Type.String()+map[bool]string{true: " NULL"}[c.Type.Nullable])
	}
	want := []string{"z BIGINT", "a VARCHAR NULL", "m BOOLEAN NULL"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("columns = %q, want %q", got, want)
	}
	text, _ := OutputColumns(api.Schema{Type: api.SchemaText})
	auto, _ := OutputColumns(api.Schema{Type: api.SchemaAuto})
	if len(text) != 1 || text[0].Name != "output" || text[0].Type.Kind != KindVarchar {
		t.Errorf("text columns = %+v", text)
	}
	if len(auto) != 1 || auto[0].Name != "output" || auto[0].Type.Kind != KindJSON {
		t.Errorf("auto columns = %+v", auto)
	}
	if _, err := OutputColumns(api.Schema{Type: api.SchemaJSON,
		JSONSchema: json.RawMessage(`{"type":"string"}`)}); err == nil {
		t.Error("a string root mapped to columns")
	}
}

func TestType_Convert(t *testing.T) {
	st := StructOf(Field{Name: "n", Type: Bigint}, Field{Name: "tags", Type: ListOf(Varchar)})
	tests := []struct {
		name string
		typ  Type
		in   string
		want any
		err  string
	}{
		{"bigint", Bigint, `42`, int64(42), ""},
		{"bigint large", Bigint, `9007199254740993`, int64(9007199254740993), ""},
		{"bigint whole float", Bigint, `3.0`, int64(3), ""},
		{"bigint exponent", Bigint, `1e3`, int64(1000), ""},
		{"bigint fraction", Bigint, `2.5`, nil, "revenue: 2.5 is not an integer"},
		{"bigint overflow", Bigint, `1e30`, nil, "revenue: 1e+30 does not fit a BIGINT"},
		{"bigint string", Bigint, `"7"`, nil, `revenue: want an integer, got string "7"`},
		{"double", Double, `2.5`, 2.5, ""},
		{"double from int", Double, `2`, 2.0, ""},
		{"varchar", Varchar, `"x"`, "x", ""},
		{"varchar number", Varchar, `1`, nil, "revenue: want a string, got number 1"},
		{"boolean", Boolean, `true`, true, ""},
		{"null", Bigint.OrNull(), `null`, nil, ""},
		{"list", ListOf(Bigint), `[1,2]`, []any{int64(1), int64(2)}, ""},
		{"list bad element", ListOf(Bigint), `[1,2.5]`, nil, "revenue.1: 2.5 is not an integer"},
		{"struct", st, `{"n":1,"tags":["a"],"extra":true}`,
			map[string]any{"n": int64(1), "tags": []any{"a"}}, ""},
		{"struct missing field", st, `{"n":1}`, map[string]any{"n": int64(1), "tags": nil}, ""},
		{"struct bad field", st, `{"n":"x"}`, nil, `revenue.n: want an integer, got string "x"`},
		{"json", JSONType, `{"b":[1,2.50]}`, json.RawMessage(`{"b":[1,2.50]}`), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := decodeJSON([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			got, err := tc.typ.Convert("revenue", v)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Convert = %#v, want %#v", got, tc.want)
			}
		})
	}
	// Values decoded without UseNumber arrive as float64.
	var f any
	_ = json.Unmarshal([]byte(`2.5`), &f)
	if _, err := Bigint.Convert("x", f); err == nil || !strings.Contains(err.Error(), "x: 2.5") {
		t.Errorf("float64 2.5 as BIGINT: %v", err)
	}
}
