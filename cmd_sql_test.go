package main

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/taskpipe/taskpipe/sinks"
)

func TestSQLCmd_PrintsTypedRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.duckdb")
	db, err := sinks.OpenDuckDB(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(`CREATE TABLE r AS SELECT 'AAPL' AS symbol, 42::BIGINT AS n, ['a','b'] AS tags, NULL::VARCHAR AS missing`)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	out := string(captureStdout(t, func() error {
		return (&sqlCmd{Database: path, Query: "SELECT * FROM r"}).Run(nil, nil)
	}))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "symbol") || lines[2] != "(1 rows)" {
		t.Fatalf("table output:\n%s", out)
	}
	if f := strings.Fields(lines[1]); len(f) != 4 || f[0] != "AAPL" || f[1] != "42" || f[2] != `["a","b"]` || f[3] != "NULL" {
		t.Fatalf("row = %q", lines[1])
	}

	out = string(captureStdout(t, func() error {
		return (&sqlCmd{Database: path, Query: "SELECT symbol, n FROM r", JSON: true}).Run(nil, nil)
	}))
	if strings.TrimSpace(out) != `{"n":42,"symbol":"AAPL"}` {
		t.Fatalf("json output %q", out)
	}

	// Files are queried in memory; a missing database is a usage error.
	out = string(captureStdout(t, func() error {
		return (&sqlCmd{Database: ":memory:", Query: "SELECT 7 AS seven"}).Run(nil, nil)
	}))
	if !strings.Contains(out, "7") {
		t.Fatalf(":memory: output %q", out)
	}
	err = (&sqlCmd{Database: filepath.Join(t.TempDir(), "none.duckdb"), Query: "SELECT 1"}).Run(nil, nil)
	if ec, ok := err.(*exitCodeError); !ok || ec.code != exitUsage {
		t.Fatalf("missing database: err = %v, want exit code %d", err, exitUsage)
	}
}

func TestSQLCmd_DatesTimestampsAndWidth(t *testing.T) {
	query := `SELECT DATE '2024-01-01' AS d, TIMESTAMP '2024-01-02 03:04:05' AS ts,
		TIMESTAMPTZ '2024-01-02 03:04:05+00' AS tz, repeat('x', 70) AS long`
	out := string(captureStdout(t, func() error {
		return (&sqlCmd{Database: ":memory:", Query: query, MaxWidth: 60}).Run(nil, nil)
	}))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{"2024-01-01", "2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z",
		strings.Repeat("x", 57) + "..."}
	if len(lines) != 3 || !slices.Equal(strings.Fields(lines[1]), want) {
		t.Fatalf("table output:\n%s\nwant row %q", out, want)
	}

	// --max-width 0 prints whole cells; --json prints the same times.
	out = string(captureStdout(t, func() error {
		return (&sqlCmd{Database: ":memory:", Query: query}).Run(nil, nil)
	}))
	if !strings.Contains(out, strings.Repeat("x", 70)) {
		t.Errorf("--max-width 0 cut the cell:\n%s", out)
	}
	out = string(captureStdout(t, func() error {
		return (&sqlCmd{Database: ":memory:", Query: "SELECT DATE '2024-01-01' AS d, " +
			"TIMESTAMP '2024-01-02 03:04:05.5' AS ts", JSON: true}).Run(nil, nil)
	}))
	if got := strings.TrimSpace(out); got != `{"d":"2024-01-01","ts":"2024-01-02T03:04:05.5Z"}` {
		t.Errorf("json output %q", got)
	}
}
