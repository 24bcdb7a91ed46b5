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

func TestParquet_ColumnTypesAcrossFiles(t *testing.T) {
	cases := []struct {
		name    string
		files   []string // the SELECT of each file, written as 0/, 1/, ...
		want    []string // column name and type, when the files agree
		wantErr []string // the problems, with FILE0, FILE1, ... for the files
	}{
		{name: "same types", files: []string{"SELECT 'a' AS k, 'x' AS name", "SELECT 'b' AS k, 'y' AS name"},
			want: []string{"k VARCHAR", "name VARCHAR"}},
		{name: "integer widths and a column missing from one file",
			files: []string{"SELECT 1::INTEGER AS n, 1.5::FLOAT AS f", "SELECT 2::BIGINT AS n, 2.5::DOUBLE AS f, 'z' AS extra"},
			want:  []string{"n BIGINT", "f DOUBLE", "extra VARCHAR"}},
		{name: "text in one file, a struct in another",
			files: []string{"SELECT 'a' AS k, 'alice' AS name", "SELECT 'b' AS k, {'first': 'bob'} AS name"},
			wantErr: []string{`parquet source: column "name" is VARCHAR in "FILE0" but STRUCT("first" VARCHAR) in "FILE1"; ` +
				"give it one type in every file, or read the files through a duckdb source that casts it"}},
		{name: "two columns differ, each reported once",
			files: []string{"SELECT 1 AS n, DATE '2024-01-02' AS d", "SELECT 'x' AS n, DATE '2024-01-03' AS d",
				"SELECT 'y' AS n, '2024' AS d"},
			wantErr: []string{
				`parquet source: column "n" is INTEGER in "FILE0" but VARCHAR in "FILE1"; give it one type ` +
					"in every file, or read the files through a duckdb source that casts it",
				`parquet source: column "d" is DATE in "FILE0" but VARCHAR in "FILE2"; give it one type ` +
					"in every file, or read the files through a duckdb source that casts it"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var paths []string
			for i, q := range tc.files {
				sub := filepath.Join(dir, fmt.Sprint(i))
				if err := os.Mkdir(sub, 0o755); err != nil {
					t.Fatal(err)
				}
				paths = append(paths, sourcetest.WriteParquet(t, sub, q))
			}
			src, err := sources.NewParquet(sources.ParquetOptions{Paths: []string{dir + "/*/data.parquet"}})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			cols, err := src.Columns(context.Background())
			if tc.wantErr != nil {
				want := strings.Join(tc.wantErr, "\n")
				for i, p := range paths {
					want = strings.ReplaceAll(want, fmt.Sprintf("FILE%d", i), p)
				}
				if err == nil || err.Error() != want {
					t.Fatalf("Columns: %v\nwant %s", err, want)
				}
				readErr := src.Read(context.Background(), 10, func(pipeline.Batch) error { return nil })
				if readErr == nil || readErr.Error() != want {
					t.Errorf("Read: %v, want the same error", readErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Columns: %v", err)
			}
			var got []string
			for _, c := range cols {
				got = append(got, c.Name+" "+c.DuckDBType)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("columns = %q, want %q", got, tc.want)
			}
		})
	}
}
