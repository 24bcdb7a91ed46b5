package sources

import (
	"fmt"
	"os"
	"strings"

	"github.com/taskpipe/taskpipe/pipeline"
)

// DuckDBOptions configures a DuckDB query source.
type DuckDBOptions struct {
	// Database is a DuckDB database file, opened read-only. Empty runs
	// the query in an empty in-memory database, where it may read files
	// with read_parquet, read_csv or read_json.
	Database string
	// Query is one SELECT (or any statement returning rows).
	Query string
	// BaseDir, when set, is where relative file paths inside the query
	// (read_parquet('companies.parquet')) are looked up, through DuckDB's
	// file_search_path; the pipeline passes the pipeline file's folder.
	BaseDir string
}

// DuckDB reads the rows a SQL query returns.
type DuckDB struct {
	*queryReader
}

var _ pipeline.Source = (*DuckDB)(nil)

// NewDuckDB checks opts (a query is given; the database file, if any,
// exists) and opens the database.
func NewDuckDB(opts DuckDBOptions) (*DuckDB, error) {
	q := strings.TrimSpace(opts.Query)
	q = strings.TrimSpace(strings.TrimSuffix(q, ";"))
	if q == "" {
		return nil, fmt.Errorf("duckdb source: query: must not be empty")
	}
	what := "duckdb query"
	if opts.Database != "" {
		st, err := os.Stat(opts.Database)
		if err != nil {
			return nil, fmt.Errorf("duckdb source: database: %w", err)
		}
		if st.IsDir() {
			return nil, fmt.Errorf("duckdb source: database: %q is a directory", opts.Database)
		}
		what = fmt.Sprintf("duckdb query on %q", opts.Database)
	}
	r, err := openQueryReader(opts.Database, q, what)
	if err != nil {
		return nil, err
	}
	if opts.BaseDir != "" {
		if _, err := r.db.Exec("SET file_search_path = " + quoteString(opts.BaseDir)); err != nil {
			r.Close()
			return nil, fmt.Errorf("duckdb source: base dir %q: %w", opts.BaseDir, err)
		}
	}
	return &DuckDB{queryReader: r}, nil
}
