package main

import (
	"path/filepath"
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
