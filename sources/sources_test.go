package sources_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/taskpipe/taskpipe/pipeline"
	"github.com/taskpipe/taskpipe/sources"
	"github.com/taskpipe/taskpipe/sources/sourcetest"
)

func TestParquet_Suite(t *testing.T) {
	sourcetest.Run(t, sourcetest.Kind{
		Name:  "parquet",
		Write: sourcetest.WriteParquet,
		Open: func(path string) (pipeline.Source, error) {
			return sources.NewParquet(sources.ParquetOptions{Paths: []string{path}})
		},
	})
}

func TestCSV_Suite(t *testing.T) {
	sourcetest.Run(t, sourcetest.Kind{
		Name:  "csv",
		Write: sourcetest.WriteCSV,
		Open: func(path string) (pipeline.Source, error) {
			return sources.NewCSV(sources.CSVOptions{Paths: []string{path}})
		},
	})
}

func TestDuckDB_Suite(t *testing.T) {
	sourcetest.Run(t, sourcetest.Kind{
		Name:  "duckdb",
		Write: sourcetest.WriteDuckDB,
		Open: func(path string) (pipeline.Source, error) {
			return sources.NewDuckDB(sources.DuckDBOptions{Database: path, Query: "SELECT * FROM t"})
		},
	})
}

// TestDuckDB_SuiteInMemory runs the suite against queries over Parquet files
// in an in-memory database, the form the sector_leaders example uses.
func TestDuckDB_SuiteInMemory(t *testing.T) {
	sourcetest.Run(t, sourcetest.Kind{
		Name:  "duckdb-read_parquet",
		Write: sourcetest.WriteParquet,
		Open: func(path string) (pipeline.Source, error) {
			return sources.NewDuckDB(sources.DuckDBOptions{
				Query: "SELECT * FROM read_parquet('" + path + "')"})
		},
	})
}

func TestOptions_Invalid(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		open func() error
		want string
	}{
		{"parquet no paths", func() error { _, err := sources.NewParquet(sources.ParquetOptions{}); return err },
			"paths: must name at least one file"},
		{"parquet glob without match", func() error {
			_, err := sources.NewParquet(sources.ParquetOptions{Paths: []string{dir + "/*.parquet"}})
			return err
		}, dir + "/*.parquet"},
		{"parquet directory", func() error {
			_, err := sources.NewParquet(sources.ParquetOptions{Paths: []string{dir}})
			return err
		}, "is a directory"},
		{"csv long delimiter", func() error {
			_, err := sources.NewCSV(sources.CSVOptions{Paths: []string{sourcetest.WriteCSV(t, dir, "SELECT 1 AS a")}, Delimiter: "::"})
			return err
		}, "delimiter: must be one character"},
		{"duckdb empty query", func() error { _, err := sources.NewDuckDB(sources.DuckDBOptions{Query: " ; "}); return err },
			"query: must not be empty"},
	}
	for _, c := range cases {
		err := c.open()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

func TestCSV_DelimiterAndHeader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "semi.csv")
	if err := os.WriteFile(path, []byte("AAPL;Apple;1976\nMSFT;Microsoft;1975\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	noHeader := false
	src, err := sources.NewCSV(sources.CSVOptions{Paths: []string{path}, Delimiter: ";", Header: &noHeader})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	cols, err := src.Columns(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []pipeline.Column{
		{Name: "column0", DuckDBType: "VARCHAR"},
		{Name: "column1", DuckDBType: "VARCHAR"},
		{Name: "column2", DuckDBType: "BIGINT"},
	}
	if !reflect.DeepEqual(cols, want) {
		t.Errorf("columns = %v, want %v", cols, want)
	}
	var rows [][]any
	err = src.Read(context.Background(), 10, func(b pipeline.Batch) error { rows = append(rows, b.Rows...); return nil })
	if err != nil {
		t.Fatal(err)
	}
	wantRows := [][]any{{"AAPL", "Apple", int64(1976)}, {"MSFT", "Microsoft", int64(1975)}}
	if !reflect.DeepEqual(rows, wantRows) {
		t.Errorf("rows = %v, want %v", rows, wantRows)
	}
}

func TestParquet_GlobReadsFilesInOrder(t *testing.T) {
	dir := t.TempDir()
	for i, q := range []string{"SELECT 1::BIGINT AS id", "SELECT 2::BIGINT AS id"} {
		sub := filepath.Join(dir, fmt.Sprint(i))
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		p := sourcetest.WriteParquet(t, sub, q)
		if err := os.Rename(p, filepath.Join(dir, fmt.Sprintf("part-%d.parquet", i))); err != nil {
			t.Fatal(err)
		}
	}
	src, err := sources.NewParquet(sources.ParquetOptions{Paths: []string{filepath.Join(dir, "part-*.parquet")}})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var ids []any
	err = src.Read(context.Background(), 10, func(b pipeline.Batch) error {
		for _, r := range b.Rows {
			ids = append(ids, r[0])
		}
		return nil
	})
	if err != nil || !reflect.DeepEqual(ids, []any{int64(1), int64(2)}) {
		t.Errorf("ids = %v, err %v; want [1 2]", ids, err)
	}
	if n, err := src.Count(context.Background()); err != nil || n != 2 {
		t.Errorf("count = %d, %v; want 2", n, err)
	}
}

func TestDuckDB_BaseDirResolvesRelativePaths(t *testing.T) {
	dir := t.TempDir()
	sourcetest.WriteParquet(t, dir, "SELECT 42::BIGINT AS answer")
	src, err := sources.NewDuckDB(sources.DuckDBOptions{
		Query: "SELECT answer FROM read_parquet('data.parquet')", BaseDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var got []any
	err = src.Read(context.Background(), 10, func(b pipeline.Batch) error {
		got = append(got, b.Rows[0][0])
		return nil
	})
	if err != nil || !reflect.DeepEqual(got, []any{int64(42)}) {
		t.Errorf("read = %v, %v; want [42]", got, err)
	}
}
