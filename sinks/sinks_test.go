package sinks_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/taskpipe/taskpipe/sinks"
	"github.com/taskpipe/taskpipe/sinks/sinktest"
)

// readAll reads every row of a query as column name -> value.
func readAll(t *testing.T, db *sql.DB, query string) []map[string]any {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), query)
	if err != nil {
		t.Fatalf("read rows: %v", err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []map[string]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatalf("scan row: %v", err)
		}
		m := make(map[string]any, len(cols))
		for i, c := range cols {
			m[c] = vals[i]
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read rows: %v", err)
	}
	return out
}

func TestDuckDB_Suite(t *testing.T) {
	sinktest.Run(t, sinktest.Suite{LiveRows: true,
		New: func(t *testing.T, dir string) (sinks.Sink, func() []map[string]any) {
			path := filepath.Join(dir, "results.duckdb")
			sink, err := sinks.NewDuckDBFile(path, "results")
			if err != nil {
				t.Fatal(err)
			}
			// The reader is another connection pool on the same file.
			reader, err := sinks.OpenDuckDB(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { reader.Close() })
			return sink, func() []map[string]any {
				return readAll(t, reader, `SELECT * FROM results`)
			}
		}})
}

func TestParquet_Suite(t *testing.T) {
	sinktest.Run(t, sinktest.Suite{
		New: func(t *testing.T, dir string) (sinks.Sink, func() []map[string]any) {
			path := filepath.Join(dir, "results.parquet")
			return sinks.NewParquet(path), func() []map[string]any {
				db, err := sinks.OpenDuckDB("")
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				return readAll(t, db, "SELECT * FROM read_parquet('"+path+"')")
			}
		}})
}
