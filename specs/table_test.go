package specs

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/taskpipe/taskpipe/api"
)

const tableSchema = `{"type":"object","additionalProperties":false,
 "required":["revenue","employees","public","segments","hq","tier"],
 "properties":{"revenue":{"type":["number","null"]},"employees":{"type":"integer"},
 "public":{"type":"boolean"},"segments":{"type":"array","items":{"type":"string"}},
 "hq":{"type":"object","properties":{"city":{"type":"string"}}},
 "tier":{"type":"string","enum":["a","b"]}}}`

func newTestTable(t *testing.T) Table {
	t.Helper()
	tbl, err := NewTable([]Column{{Name: "symbol", Type: Varchar}, {Name: "day", Type: SQLType("DATE")}},
		api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(tableSchema)})
	if err != nil {
		t.Fatalf("NewTable: %v", err)
	}
	return tbl
}

func TestTable_DDL(t *testing.T) {
	tbl := newTestTable(t)
	want := `CREATE TABLE "results" (
  "symbol" VARCHAR,
  "day" DATE,
  "run_id" VARCHAR,
  "status" VARCHAR,
  "error" VARCHAR,
  "processor" VARCHAR,
  "revenue" DOUBLE,
  "employees" BIGINT,
  "public" BOOLEAN,
  "segments" VARCHAR[],
  "hq" STRUCT("city" VARCHAR),
  "tier" VARCHAR,
  "basis" STRUCT("field" VARCHAR, "reasoning" VARCHAR, "confidence" VARCHAR, ` +
		`"citations" STRUCT("url" VARCHAR, "title" VARCHAR, "excerpts" VARCHAR[])[])[],
  "created_at" TIMESTAMPTZ,
  "finished_at" TIMESTAMPTZ,
  "input_fingerprint" VARCHAR,
  "spec_hash" VARCHAR
);`
	if got := tbl.DDL("results"); got != want {
		t.Errorf("DDL:\n%s\nwant:\n%s", got, want)
	}
	tbl.Enums = true
	if got := tbl.DDL("results"); !strings.Contains(got, `"tier" ENUM('a', 'b')`) {
		t.Errorf("DDL with enums lacks the ENUM type:\n%s", got)
	}
}

func TestNewTable_Collisions(t *testing.T) {
	_, err := NewTable([]Column{{Name: "Status", Type: Varchar}, {Name: "name", Type: Varchar}},
		api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(
			`{"type":"object","properties":{"run_id":{"type":"string"},"NAME":{"type":"string"},"x":{"type":"string"}}}`)})
	if err == nil {
		t.Fatal("colliding names accepted")
	}
	for _, want := range []string{
		`the fixed column "status" collides with key column "Status"`,
		`output field "run_id" collides with the fixed column "run_id"`,
		`output field "NAME" collides with key column "name"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := NewTable(nil, api.Schema{Type: api.SchemaText}); err == nil {
		t.Error("a table without key columns was accepted")
	}
}

func TestTable_OutputValues(t *testing.T) {
	tbl := newTestTable(t)
	got, err := tbl.OutputValues(json.RawMessage(`{"revenue":null,"employees":12000,"public":true,
		"segments":["x","y"],"hq":{"city":"Oslo"},"tier":"a"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []any{nil, int64(12000), true, []any{"x", "y"}, map[string]any{"city": "Oslo"}, "a"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("OutputValues = %#v\nwant %#v", got, want)
	}
	if _, err := tbl.OutputValues(json.RawMessage(`{"employees":2.5}`)); err == nil ||
		!strings.Contains(err.Error(), "employees: 2.5 is not an integer") {
		t.Errorf("2.5 employees: %v", err)
	}
	empty, err := tbl.OutputValues(nil)
	if err != nil || len(empty) != 6 || empty[1] != nil {
		t.Errorf("empty output = %v, %v", empty, err)
	}

	text, _ := NewTable([]Column{{Name: "k", Type: Varchar}}, api.Schema{Type: api.SchemaText})
	v, err := text.OutputValues(json.RawMessage(`"# Report"`))
	if err != nil || v[0] != "# Report" {
		t.Errorf("text output = %v, %v", v, err)
	}
	auto, _ := NewTable([]Column{{Name: "k", Type: Varchar}}, api.Schema{Type: api.SchemaAuto})
	v, err = auto.OutputValues(json.RawMessage(` {"a":1} `))
	if err != nil || string(v[0].(json.RawMessage)) != `{"a":1}` {
		t.Errorf("auto output = %v, %v", v, err)
	}
}
