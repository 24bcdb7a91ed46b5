package pipeline

import (
	"strings"
	"testing"

	"github.com/taskpipe/taskpipe/api"
)

func TestMapRow_OversizeInputIsInvalidNotFatal(t *testing.T) {
	cols := []Column{{Name: "id", DuckDBType: "BIGINT"}, {Name: "name", DuckDBType: "VARCHAR"}}
	spec := api.TaskSpec{OutputSchema: api.Schema{Type: api.SchemaAuto}}
	m, err := newMapper(cols, []string{"id"}, nil, spec)
	if err != nil {
		t.Fatal(err)
	}
	short := m.mapRow([]any{int64(1), "Acme"})
	if short.Invalid != "" {
		t.Fatalf("short row invalid: %s", short.Invalid)
	}
	long := m.mapRow([]any{int64(2), strings.Repeat("x", MaxSpecAndInputChars)})
	if !strings.Contains(long.Invalid, "limit of 25000") || long.Key == "" {
		t.Fatalf("oversize row: invalid %q, key %q; want the size limit named and the key kept", long.Invalid, long.Key)
	}
}
