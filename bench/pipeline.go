package bench

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/taskpipe/taskpipe/sinks"
)

// PipelineFixture is a generated pipeline over a Parquet file of n rows.
type PipelineFixture struct {
	Dir      string
	Parquet  string // the source file
	Spec     string // the pipeline YAML
	Database string // the DuckDB file the pipeline writes
	Table    string
	Rows     int
}

// fixtureTaskSpec gives the benchmark's runs a few typed output columns.
const fixtureTaskSpec = `{
  "input_schema": {"type": "json", "json_schema": {
    "type": "object",
    "properties": {"company_name": {"type": "string"}, "sector": {"type": "string"}, "founded": {"type": "integer"}},
    "required": ["company_name", "sector", "founded"], "additionalProperties": false}},
  "output_schema": {"type": "json", "json_schema": {
    "type": "object",
    "properties": {
      "summary": {"type": "string", "description": "one line about the company"},
      "employees": {"type": "integer"},
      "public": {"type": "boolean"},
      "tier": {"type": "string", "enum": ["small", "mid", "large"]},
      "tags": {"type": "array", "items": {"type": "string"}}
    },
    "required": ["summary", "employees", "public", "tier", "tags"], "additionalProperties": false}}
}`

// WritePipelineFixture writes a Parquet file of rows companies and a
// pipeline that runs them through synthetic into a DuckDB table, in dir.
func WritePipelineFixture(ctx context.Context, dir string, rows int) (PipelineFixture, error) {
	f := PipelineFixture{
		Dir: dir, Rows: rows, Table: "results",
		Parquet:  filepath.Join(dir, "companies.parquet"),
		Spec:     filepath.Join(dir, "pipeline.yaml"),
		Database: filepath.Join(dir, "out.duckdb"),
	}
	// Start clean: a state or table left by an earlier run in dir would
	// make this one skip its rows.
	for _, old := range []string{"state", "out.duckdb", "out.duckdb.wal", "baseline.duckdb",
		"baseline.duckdb.wal"} {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			return f, fmt.Errorf("clear %s: %w", old, err)
		}
	}
	db, err := sinks.OpenDuckDB("")
	if err != nil {
		return f, err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, fmt.Sprintf(`COPY (
		SELECT i AS id, 'Company ' || i AS company_name,
			['Energy', 'Industrials', 'Health Care', 'Financials'][1 + i %% 4] AS sector,
			1850 + i %% 170 AS founded
		FROM range(%d) t(i)) TO '%s' (FORMAT parquet)`, rows, strings.ReplaceAll(f.Parquet, "'", "''")))
	if err != nil {
		return f, fmt.Errorf("write fixture parquet: %w", err)
	}
	spec := `version: 1
name: bench
source:
  parquet: [companies.parquet]
key: [id]
mapping:
  company_name: company_name
  sector: sector
  founded: founded
task:
  spec_file: task_spec.json
  processor: synthetic
target:
  engine: embedded
  state_dir: state
sink:
  duckdb: {database: out.duckdb, table: results}
`
	if err := os.WriteFile(f.Spec, []byte(spec), 0o644); err != nil {
		return f, fmt.Errorf("write fixture pipeline: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "task_spec.json"), []byte(fixtureTaskSpec), 0o644); err != nil {
		return f, fmt.Errorf("write fixture task spec: %w", err)
	}
	return f, nil
}

// DuckDBCopy is the baseline: a plain DuckDB copy of the same Parquet rows
// into a table of a new database file. It returns how long it took.
func DuckDBCopy(ctx context.Context, parquet, database string) (time.Duration, error) {
	start := time.Now()
	db, err := sinks.OpenDuckDB(database)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, fmt.Sprintf(`CREATE TABLE copied AS SELECT * FROM read_parquet('%s')`,
		strings.ReplaceAll(parquet, "'", "''")))
	if err != nil {
		return 0, fmt.Errorf("copy parquet into duckdb: %w", err)
	}
	if err := db.Close(); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// CountByStatus counts the result rows of a table by status.
func CountByStatus(ctx context.Context, database, table string) (map[string]int64, error) {
	db, err := sinks.OpenDuckDBReadOnly(database)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT status, count(*) FROM `+table+` GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("count results: %w", err)
	}
	defer rows.Close()
	counts := make(map[string]int64)
	for rows.Next() {
		var s sql.NullString
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			return nil, fmt.Errorf("count results: %w", err)
		}
		counts[s.String] = n
	}
	return counts, rows.Err()
}
