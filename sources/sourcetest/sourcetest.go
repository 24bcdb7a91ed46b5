// Package sourcetest is the suite every kind of pipeline.Source passes: the
// same rows written in each kind's format come back as the same values with
// the same column types; an empty source reads as no rows; a missing file is
// reported by name; and a million-row source streams without holding its
// rows in memory.
package sourcetest

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	_ "github.com/duckdb/duckdb-go/v2" // the duckdb driver writes fixtures

	"github.com/taskpipe/taskpipe/pipeline"
)

// Kind describes one kind of source to the suite.
type Kind struct {
	// Name names the kind in test output: parquet, csv, duckdb.
	Name string
	// Write stores the rows of the DuckDB query selectSQL in the kind's
	// format under dir (using the helpers of this package) and returns
	// the path to open.
	Write func(t *testing.T, dir, selectSQL string) string
	// Open makes a source over path, as Write returned it or a path that
	// does not exist.
	Open func(path string) (pipeline.Source, error)
}

// Columns and rows every kind must reproduce. The data avoids what CSV
// cannot tell apart (an empty string and NULL) and holds what is easy to
// get wrong: quotes, commas, line breaks, non-ASCII text, NULLs, negative
// and large numbers.
var (
	wantColumns = []pipeline.Column{
		{Name: "id", DuckDBType: "BIGINT"},
		{Name: "name", DuckDBType: "VARCHAR"},
		{Name: "score", DuckDBType: "DOUBLE"},
		{Name: "added", DuckDBType: "DATE"},
		{Name: "active", DuckDBType: "BOOLEAN"},
	}
	wantRows = [][]any{
		{int64(1), "Acme, Inc.", 1.5, "2020-01-31", true},
		{int64(2), `Quote "Co"`, -2.25, "1999-12-01", false},
		{int64(3), "Zürich Ünited", 1e6 + 0.5, nil, true},
		{int64(4), "two\nlines", nil, "2024-02-29", nil},
		{int64(9007199254740993), nil, 0.125, "1970-01-01", false},
	}
)

// fixtureSQL is a DuckDB query producing wantRows with wantColumns.
func fixtureSQL() string {
	var rows []string
	for _, r := range wantRows {
		vals := make([]string, len(r))
		for i, v := range r {
			switch x := v.(type) {
			case nil:
				vals[i] = "NULL"
			case string:
				vals[i] = "'" + strings.ReplaceAll(x, "'", "''") + "'"
			default:
				vals[i] = fmt.Sprint(x)
			}
		}
		rows = append(rows, "("+strings.Join(vals, ", ")+")")
	}
	return fmt.Sprintf(`SELECT id::BIGINT AS id, name::VARCHAR AS name, score::DOUBLE AS score,
		added::DATE AS added, active::BOOLEAN AS active
		FROM (VALUES %s) AS t(id, name, score, added, active) ORDER BY id`, strings.Join(rows, ", "))
}

// Run runs the whole suite against k.
func Run(t *testing.T, k Kind) {
	t.Run("SameRowsAndTypes", func(t *testing.T) { testSameRows(t, k) })
	t.Run("Empty", func(t *testing.T) { testEmpty(t, k) })
	t.Run("MissingFile", func(t *testing.T) { testMissing(t, k) })
	t.Run("BatchSizes", func(t *testing.T) { testBatches(t, k) })
	t.Run("StopEarly", func(t *testing.T) { testStopEarly(t, k) })
	t.Run("MillionRowsBoundedMemory", func(t *testing.T) { testMillion(t, k) })
}

func open(t *testing.T, k Kind, path string) pipeline.Source {
	t.Helper()
	src, err := k.Open(path)
	if err != nil {
		t.Fatalf("open %s source %s: %v", k.Name, path, err)
	}
	t.Cleanup(func() {
		if err := src.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return src
}

// readAll reads every row of src in batches of size.
func readAll(t *testing.T, src pipeline.Source, size int) [][]any {
	t.Helper()
	var rows [][]any
	var next int64
	err := src.Read(context.Background(), size, func(b pipeline.Batch) error {
		if b.Offset != next {
			return fmt.Errorf("batch offset %d, want %d", b.Offset, next)
		}
		if len(b.Rows) == 0 || len(b.Rows) > size {
			return fmt.Errorf("batch of %d rows, want 1..%d", len(b.Rows), size)
		}
		next += int64(len(b.Rows))
		rows = append(rows, b.Rows...)
		return nil
	})
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return rows
}

func testSameRows(t *testing.T, k Kind) {
	path := k.Write(t, t.TempDir(), fixtureSQL())
	src := open(t, k, path)
	cols, err := src.Columns(context.Background())
	if err != nil {
		t.Fatalf("columns: %v", err)
	}
	if !reflect.DeepEqual(cols, wantColumns) {
		t.Errorf("columns:\n got %v\nwant %v", cols, wantColumns)
	}
	rows := readAll(t, src, 2)
	if !reflect.DeepEqual(rows, wantRows) {
		t.Errorf("rows:\n got %#v\nwant %#v", rows, wantRows)
	}
	if c, ok := src.(pipeline.Counter); ok {
		n, err := c.Count(context.Background())
		if err != nil || n != int64(len(wantRows)) {
			t.Errorf("count = %d, %v; want %d", n, err, len(wantRows))
		}
	}
}

func testEmpty(t *testing.T, k Kind) {
	path := k.Write(t, t.TempDir(), fixtureSQL()+" LIMIT 0")
	src := open(t, k, path)
	cols, err := src.Columns(context.Background())
	if err != nil {
		t.Fatalf("columns: %v", err)
	}
	var names []string
	for _, c := range cols {
		names = append(names, c.Name)
	}
	if want := []string{"id", "name", "score", "added", "active"}; !reflect.DeepEqual(names, want) {
		t.Errorf("column names = %v, want %v", names, want)
	}
	calls := 0
	err = src.Read(context.Background(), 10, func(pipeline.Batch) error { calls++; return nil })
	if err != nil || calls != 0 {
		t.Errorf("read empty source: %d batches, err %v; want 0, nil", calls, err)
	}
}

func testMissing(t *testing.T, k Kind) {
	missing := filepath.Join(t.TempDir(), "no-such-file-"+k.Name)
	src, err := k.Open(missing)
	if err == nil {
		// A kind may only find out when it reads; it must fail then.
		defer src.Close()
		_, err = src.Columns(context.Background())
	}
	if err == nil {
		t.Fatalf("open and describe %s: no error", missing)
	}
	if !strings.Contains(err.Error(), missing) {
		t.Errorf("error %q does not name the file %s", err, missing)
	}
}

func testBatches(t *testing.T, k Kind) {
	path := k.Write(t, t.TempDir(), "SELECT i::BIGINT AS id FROM range(5000) t(i)")
	for _, size := range []int{1, 7, 2048, 5000, 100000} {
		src := open(t, k, path)
		rows := readAll(t, src, size)
		if len(rows) != 5000 {
			t.Fatalf("batch size %d: %d rows, want 5000", size, len(rows))
		}
		for i, r := range rows {
			if r[0] != int64(i) {
				t.Fatalf("batch size %d: row %d holds id %v", size, i, r[0])
			}
		}
	}
	src := open(t, k, path)
	if err := src.Read(context.Background(), 0, func(pipeline.Batch) error { return nil }); err == nil {
		t.Errorf("read with batch size 0: no error")
	}
}

func testStopEarly(t *testing.T, k Kind) {
	path := k.Write(t, t.TempDir(), "SELECT i::BIGINT AS id FROM range(10000) t(i)")
	src := open(t, k, path)
	stop := fmt.Errorf("enough")
	calls := 0
	err := src.Read(context.Background(), 100, func(pipeline.Batch) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if err != stop || calls != 3 {
		t.Errorf("read stopped by fn: %d calls, err %v; want 3, %v", calls, err, stop)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	src2 := open(t, k, path)
	if err := src2.Read(ctx, 100, func(pipeline.Batch) error { return nil }); err == nil {
		t.Errorf("read with a cancelled context: no error")
	}
}

// testMillion reads a million rows with 1,000-row batches and checks the Go
// heap stays far below the size of the data (about 60 MB as Go values).
func testMillion(t *testing.T, k Kind) {
	if testing.Short() {
		t.Skip("skipping the million-row source in -short mode")
	}
	const n = 1_000_000
	path := k.Write(t, t.TempDir(), fmt.Sprintf(
		"SELECT i::BIGINT AS id, 'company number ' || i AS name, i * 0.5 AS score FROM range(%d) t(i)", n))
	src := open(t, k, path)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak uint64
	var count, batches int64
	err := src.Read(context.Background(), 1000, func(b pipeline.Batch) error {
		for i, r := range b.Rows {
			if r[0] != b.Offset+int64(i) {
				return fmt.Errorf("row %d holds id %v", b.Offset+int64(i), r[0])
			}
		}
		count += int64(len(b.Rows))
		batches++
		if batches%100 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if count != n {
		t.Fatalf("read %d rows, want %d", count, n)
	}
	grew := int64(peak) - int64(base)
	t.Logf("%s: %d rows, Go heap grew at most %.1f MB, process peak RSS %s",
		k.Name, count, float64(grew)/1e6, peakRSS())
	if grew > 48<<20 {
		t.Errorf("Go heap grew by %d bytes while streaming; rows are being held", grew)
	}
}

// peakRSS reads the process's peak resident set size from /proc, or "n/a".
func peakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "n/a"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:"))
		}
	}
	return "n/a"
}

// exec runs statements in a fresh DuckDB (a file when dbPath is set).
func exec(t *testing.T, dbPath string, stmts ...string) {
	t.Helper()
	dsn := "?" + url.Values{
		"autoinstall_known_extensions": {"false"},
		"autoload_known_extensions":    {"false"},
	}.Encode()
	db, err := sql.Open("duckdb", dbPath+dsn)
	if err != nil {
		t.Fatalf("open duckdb: %v", err)
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("exec %s: %v", s, err)
		}
	}
}

// WriteParquet writes the rows of selectSQL to dir/data.parquet.
func WriteParquet(t *testing.T, dir, selectSQL string) string {
	path := filepath.Join(dir, "data.parquet")
	exec(t, "", fmt.Sprintf("COPY (%s) TO '%s' (FORMAT parquet)", selectSQL, path))
	return path
}

// WriteCSV writes the rows of selectSQL to dir/data.csv with a header.
func WriteCSV(t *testing.T, dir, selectSQL string) string {
	path := filepath.Join(dir, "data.csv")
	exec(t, "", fmt.Sprintf("COPY (%s) TO '%s' (FORMAT csv, HEADER true)", selectSQL, path))
	return path
}

// WriteDuckDB stores the rows of selectSQL as table t in dir/data.duckdb.
func WriteDuckDB(t *testing.T, dir, selectSQL string) string {
	path := filepath.Join(dir, "data.duckdb")
	exec(t, path, "CREATE TABLE t AS "+selectSQL)
	return path
}
