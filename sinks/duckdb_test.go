package sinks_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// TestDuckDB_FailedLargeBatchWritesNothing writes a batch of new rows larger
// than the Appender flushes at once (204,800 rows), whose last row DuckDB
// cannot store: the rows flushed before it must not stay.
func TestDuckDB_FailedLargeBatchWritesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 210,000 rows")
	}
	ctx := context.Background()
	tbl, err := specs.NewTable([]specs.Column{{Name: "day", Type: specs.SQLType("DATE")}},
		api.Schema{Type: api.SchemaText})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := sinks.NewDuckDBFile(filepath.Join(t.TempDir(), "f.duckdb"), "results")
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Open(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	defer sink.Close(ctx)
	start := time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC)
	rows := make([]sinks.Row, 210000)
	for i := range rows {
		rows[i] = sinks.Row{Key: []any{start.AddDate(0, 0, i).Format(time.DateOnly)},
			Status: specs.StatusInvalidInput}
	}
	rows[len(rows)-1].Key = []any{"not a date"}
	if err := sink.Write(ctx, rows); err == nil {
		t.Fatal("Write accepted the key 'not a date'")
	}
	var n int
	if err := sink.DB().QueryRow(`SELECT count(*) FROM results`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("rows after the failed batch = %d, want 0", n)
	}
}

// TestDuckDB_OwnDatabaseSettings checks the settings a sink gives the
// database it opens itself, and that it leaves a caller's database alone.
func TestDuckDB_OwnDatabaseSettings(t *testing.T) {
	ctx := context.Background()
	tbl, err := specs.NewTable([]specs.Column{{Name: "id", Type: specs.Varchar}},
		api.Schema{Type: api.SchemaText})
	if err != nil {
		t.Fatal(err)
	}
	settings := func(db *sql.DB) string {
		var threads, threshold, memory string
		err := db.QueryRow(`SELECT current_setting('threads')::VARCHAR,
			current_setting('checkpoint_threshold'), current_setting('memory_limit')`).
			Scan(&threads, &threshold, &memory)
		if err != nil {
			t.Fatal(err)
		}
		return threads + " " + threshold + " " + memory
	}

	own, err := sinks.NewDuckDBFile(filepath.Join(t.TempDir(), "own.duckdb"), "results")
	if err != nil {
		t.Fatal(err)
	}
	if err := own.Open(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	defer own.Close(ctx)
	// DuckDB shows 128MB and 256MB (decimal units) in MiB.
	if got, want := settings(own.DB()), "1 122.0 MiB 244.1 MiB"; got != want {
		t.Errorf("own database: threads, checkpoint_threshold, memory_limit = %s, want %s",
			got, want)
	}

	db, err := sinks.OpenDuckDB(filepath.Join(t.TempDir(), "shared.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	before := settings(db)
	shared := sinks.NewDuckDB(db, "results")
	if err := shared.Open(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	defer shared.Close(ctx)
	if got := settings(db); got != before {
		t.Errorf("caller's database settings = %s, were %s", got, before)
	}
}

// benchOutputSchema is the output schema of the pipeline benchmark
// (bench/pipeline.go): five columns, one of them a list.
const benchOutputSchema = `{"type":"object","additionalProperties":false,
 "required":["summary","employees","public","tier","tags"],
 "properties":{"summary":{"type":"string"},"employees":{"type":"integer"},
  "public":{"type":"boolean"},"tier":{"type":"string","enum":["small","mid","large"]},
  "tags":{"type":"array","items":{"type":"string"}}}}`

// benchBasis returns a basis of six entries with reasoning of about 120
// characters, as the synthetic processor writes; cited adds two citations
// with a title and two excerpts to each entry, as research does.
func benchBasis(cited bool) []api.FieldBasis {
	low, title := "low", "Annual report 2025"
	basis := make([]api.FieldBasis, 6)
	for i, f := range []string{"summary", "employees", "public", "tier", "tags.0", "tags.1"} {
		basis[i] = api.FieldBasis{Field: f, Confidence: &low, Citations: []api.Citation{},
			Reasoning: "Synthetic output generated offline by taskpipe from a hash of the " +
				"input; this is not research and no source was consulted."}
		if cited {
			for j := range 2 {
				basis[i].Citations = append(basis[i].Citations, api.Citation{
					URL: fmt.Sprintf("https://example.com/report/%d", j), Title: &title,
					Excerpts: []string{"We employ about 12,000 people.", "Revenue grew 8%."}})
			}
		}
	}
	return basis
}

// BenchmarkDuckDB_Write measures sink throughput on rows like the
// pipeline's (bench/pipeline.go): batches of 8,000 rows with five output
// columns, already converted, and a six-entry basis, upserted into a table
// that grows to b.N rows, then closed. Reported as rows/s and as CPU time
// per row (Go and DuckDB threads).
func BenchmarkDuckDB_Write(b *testing.B) {
	benchmarkSink(b, func(dir string) sinks.Sink {
		sink, err := sinks.NewDuckDBFile(filepath.Join(dir, "bench.duckdb"), "results")
		if err != nil {
			b.Fatal(err)
		}
		return sink
	})
}

// benchmarkSink runs the write benchmark on the sinks newSink makes, for
// both kinds of basis.
func benchmarkSink(b *testing.B, newSink func(dir string) sinks.Sink) {
	for _, cited := range []bool{false, true} {
		name := "synthetic"
		if cited {
			name = "cited"
		}
		b.Run(name, func(b *testing.B) {
			benchmarkWrite(b, newSink(b.TempDir()), benchBasis(cited))
		})
	}
}

// benchmarkWrite writes b.N rows to sink in batches of 8,000 and closes
// it.
func benchmarkWrite(b *testing.B, sink sinks.Sink, basis []api.FieldBasis) {
	ctx := context.Background()
	tbl, err := specs.NewTable([]specs.Column{{Name: "id", Type: specs.Bigint}},
		api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(benchOutputSchema)})
	if err != nil {
		b.Fatal(err)
	}
	if err := sink.Open(ctx, tbl); err != nil {
		b.Fatal(err)
	}
	created := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	const batch = 8000
	rows := make([]sinks.Row, 0, batch)
	b.ResetTimer()
	cpu := processCPU()
	for i := range b.N {
		summary := fmt.Sprintf("Company %d is a mid-sized firm in Energy founded in %d.", i, 1850+i%170)
		out := fmt.Sprintf(`{"summary":%q,"employees":%d,"public":true,"tier":"mid",`+
			`"tags":["energy","private"]}`, summary, i%5000)
		rows = append(rows, sinks.Row{Key: []any{int64(i)}, RunID: fmt.Sprintf("trun_%016x", i),
			Status: "completed", Processor: "synthetic", Output: json.RawMessage(out),
			OutputValues: []any{summary, int64(i % 5000), true, "mid", []any{"energy", "private"}},
			Basis:        basis, CreatedAt: created, FinishedAt: created.Add(time.Second),
			InputFingerprint: fmt.Sprintf("fp%030x", i), SpecHash: "3f2a9c0d1e"})
		if len(rows) == batch || i == b.N-1 {
			if err := sink.Write(ctx, rows); err != nil {
				b.Fatal(err)
			}
			rows = rows[:0]
		}
	}
	// Closing checkpoints what the last writes left in the WAL (or
	// publishes the file): part of the cost of writing.
	if err := sink.Close(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/row")
}
