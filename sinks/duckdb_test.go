package sinks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/sinks"
	"github.com/taskpipe/taskpipe/specs"
)

func TestDuckDB_EnumColumns(t *testing.T) {
	ctx := context.Background()
	tbl, err := specs.NewTable([]specs.Column{{Name: "id", Type: specs.Bigint}},
		api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(
			`{"type":"object","properties":{"tier":{"type":"string","enum":["small","large"]}}}`)})
	if err != nil {
		t.Fatal(err)
	}
	tbl.Enums = true
	db, err := sinks.OpenDuckDB(filepath.Join(t.TempDir(), "e.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sink := sinks.NewDuckDB(db, "main.tiers")
	if err := sink.Open(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	defer sink.Close(ctx)
	err = sink.Write(ctx, []sinks.Row{
		{Key: []any{int64(1)}, RunID: "r1", Status: "completed", Output: json.RawMessage(`{"tier":"large"}`)},
		{Key: []any{json.Number("2")}, RunID: "r2", Status: "completed", Output: json.RawMessage(`{"tier":"small"}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var typ string
	if err := db.QueryRow(`SELECT data_type FROM duckdb_columns() WHERE table_name = 'tiers'
		AND column_name = 'tier'`).Scan(&typ); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(typ, "ENUM(") {
		t.Errorf("tier column type = %s, want an ENUM", typ)
	}
	var got string
	if err := db.QueryRow(`SELECT string_agg(id || ':' || tier, ',' ORDER BY id) FROM tiers`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "1:large,2:small" {
		t.Errorf("rows = %s", got)
	}
}

func TestDuckDB_TextAndAutoOutputs(t *testing.T) {
	ctx := context.Background()
	for _, kind := range []string{api.SchemaText, api.SchemaAuto} {
		tbl, err := specs.NewTable([]specs.Column{{Name: "id", Type: specs.Varchar}}, api.Schema{Type: kind})
		if err != nil {
			t.Fatal(err)
		}
		sink, err := sinks.NewDuckDBFile(filepath.Join(t.TempDir(), "o.duckdb"), "out")
		if err != nil {
			t.Fatal(err)
		}
		if err := sink.Open(ctx, tbl); err != nil {
			t.Fatal(err)
		}
		content := `"# Report\nAll good."`
		if kind == api.SchemaAuto {
			content = `{"ceo":"Ada"}`
		}
		if err := sink.Write(ctx, []sinks.Row{{Key: []any{"a"}, RunID: "r", Status: "completed",
			Output: json.RawMessage(content)}}); err != nil {
			t.Fatal(err)
		}
		var out string
		if err := sink.DB().QueryRow(`SELECT output::VARCHAR FROM out`).Scan(&out); err != nil {
			t.Fatal(err)
		}
		want := "# Report\nAll good."
		if kind == api.SchemaAuto {
			want = `{"ceo":"Ada"}`
		}
		if out != want {
			t.Errorf("%s output = %q, want %q", kind, out, want)
		}
		sink.Close(ctx)
	}
}

// BenchmarkDuckDB_Write measures sink throughput: batches of 1,000 typed
// rows upserted into a table that grows to b.N rows. Reported as rows/s.
func BenchmarkDuckDB_Write(b *testing.B) {
	ctx := context.Background()
	tbl, err := specs.NewTable([]specs.Column{{Name: "symbol", Type: specs.Varchar}},
		api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(
			`{"type":"object","properties":{"employees":{"type":"integer"},"revenue":{"type":"number"},
			"segments":{"type":"array","items":{"type":"string"}},
			"hq":{"type":"object","properties":{"city":{"type":"string"}}}}}`)})
	if err != nil {
		b.Fatal(err)
	}
	sink, err := sinks.NewDuckDBFile(filepath.Join(b.TempDir(), "bench.duckdb"), "results")
	if err != nil {
		b.Fatal(err)
	}
	if err := sink.Open(ctx, tbl); err != nil {
		b.Fatal(err)
	}
	defer sink.Close(ctx)
	conf := "low"
	const batch = 1000
	rows := make([]sinks.Row, 0, batch)
	b.ResetTimer()
	for i := range b.N {
		rows = append(rows, sinks.Row{Key: []any{fmt.Sprintf("S%09d", i)}, RunID: fmt.Sprintf("run_%d", i),
			Status: "completed", Processor: "lite",
			Output: json.RawMessage(`{"employees":120,"revenue":1.5e9,"segments":["a","b"],"hq":{"city":"Oslo"}}`),
			Basis:  []api.FieldBasis{{Field: "employees", Reasoning: "synthetic", Confidence: &conf}},
		})
		if len(rows) == batch || i == b.N-1 {
			if err := sink.Write(ctx, rows); err != nil {
				b.Fatal(err)
			}
			rows = rows[:0]
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
