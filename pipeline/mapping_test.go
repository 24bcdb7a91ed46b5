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

func TestMapRow_NamesEveryNullKeyColumn(t *testing.T) {
	cols := []Column{{Name: "k1", DuckDBType: "BIGINT"}, {Name: "k2", DuckDBType: "VARCHAR"},
		{Name: "name", DuckDBType: "VARCHAR"}}
	spec := api.TaskSpec{OutputSchema: api.Schema{Type: api.SchemaAuto}}
	m, err := newMapper(cols, []string{"k1", "k2"}, nil, spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		row  []any
		want string
	}{
		{[]any{nil, nil, "Acme"}, `key columns "k1", "k2" are NULL`},
		{[]any{int64(1), nil, "Acme"}, `key column "k2" is NULL`},
		{[]any{int64(1), "a", "Acme"}, ""},
	} {
		got := m.mapRow(tc.row)
		if got.NullKey != (tc.want != "") || !strings.HasPrefix(got.Invalid, tc.want) {
			t.Errorf("row %v: invalid %q (null key %v), want it to start with %q",
				tc.row, got.Invalid, got.NullKey, tc.want)
		}
	}
}
