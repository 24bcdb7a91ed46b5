// Package sources holds the kinds of pipeline.Source: Parquet files, CSV
// files and DuckDB queries, one file per kind. All three read through an
// embedded DuckDB (github.com/duckdb/duckdb-go/v2), which detects types,
// reads globs of files and streams rows to Go in chunks; extension
// auto-install and auto-load are off, so nothing is fetched from the
// network (Parquet and JSON support are built in).
//
// Every kind validates its own options when it is made, and every error
// names the file or query at fault. The csv kind also reads its files to
// the end before it hands on a column or a row, so that a malformed file
// is reported (as a *CSVError: file, line, reason) before anything runs.
// sources/sourcetest is the suite each kind passes.
package sources

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/taskpipe/taskpipe/pipeline"
)

// offlineSettings are the DuckDB options every source database is opened
// with: no extension is ever downloaded or loaded behind our back.
var offlineSettings = url.Values{
	"autoinstall_known_extensions": {"false"},
	"autoload_known_extensions":    {"false"},
}

// queryReader runs one SELECT against an embedded DuckDB and streams its
// rows. The parquet, csv and duckdb kinds differ only in the database they
// open and the query they build.
type queryReader struct {
	db    *sql.DB
	query string
	// what names the source in errors: a file list or "query".
	what string
	cols []pipeline.Column
}

// openQueryReader opens DuckDB (in memory when path is empty, else the
// database file read-only) for query.
func openQueryReader(path, query, what string) (*queryReader, error) {
	settings := url.Values{}
	for k, v := range offlineSettings {
		settings[k] = v
	}
	dsn := ":memory:"
	if path != "" {
		settings.Set("access_mode", "READ_ONLY")
		dsn = path
	}
	connector, err := duckdb.NewConnector(dsn+"?"+settings.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("open duckdb %s: %w", what, err)
	}
	db := sql.OpenDB(connector)
	// One connection keeps a query's temporary state in one place.
	db.SetMaxOpenConns(1)
	return &queryReader{db: db, query: query, what: what}, nil
}

// Columns describes the query's result without running it to the end.
func (q *queryReader) Columns(ctx context.Context) ([]pipeline.Column, error) {
	if q.cols != nil {
		return q.cols, nil
	}
	cols, err := q.describe(ctx, q.query, q.what)
	if err != nil {
		return nil, err
	}
	q.cols = cols
	return cols, nil
}

// describe returns the columns of query's result without running it; what
// names the query in errors.
func (q *queryReader) describe(ctx context.Context, query, what string) ([]pipeline.Column, error) {
	rows, err := q.db.QueryContext(ctx, "DESCRIBE "+query)
	if err != nil {
		return nil, fmt.Errorf("describe %s: %w", what, err)
	}
	defer rows.Close()
	names, err := rows.Columns()
	if err != nil {
		return nil, fmt.Errorf("describe %s: %w", what, err)
	}
	var cols []pipeline.Column
	for rows.Next() {
		vals := make([]any, len(names))
		ptrs := make([]any, len(names))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("describe %s: %w", what, err)
		}
		// DESCRIBE returns column_name, column_type, null, key, ...
		cols = append(cols, pipeline.Column{
			Name:       fmt.Sprint(vals[0]),
			DuckDBType: fmt.Sprint(vals[1]),
		})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("describe %s: %w", what, err)
	}
	return cols, nil
}

// count counts the query's rows. For Parquet files DuckDB answers from the
// footers; for CSV and arbitrary queries it scans, so only the Parquet kind
// offers it as pipeline.Counter.
func (q *queryReader) count(ctx context.Context) (int64, error) {
	var n int64
	if err := q.db.QueryRowContext(ctx, "SELECT count(*) FROM ("+q.query+")").Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s: %w", q.what, err)
	}
	return n, nil
}

// Read streams the query's rows in batches of batchSize.
func (q *queryReader) Read(ctx context.Context, batchSize int, fn func(pipeline.Batch) error) error {
	if batchSize <= 0 {
		return fmt.Errorf("read %s: batch size must be positive, not %d", q.what, batchSize)
	}
	cols, err := q.Columns(ctx)
	if err != nil {
		return err
	}
	rows, err := q.db.QueryContext(ctx, q.query)
	if err != nil {
		return fmt.Errorf("read %s: %w", q.what, err)
	}
	defer rows.Close()

	// Scan each row into fresh values, convert them and hand full batches
	// on; the driver fetches DuckDB's result one chunk (2,048 rows) at a
	// time.
	conv := make([]func(any) any, len(cols))
	for i, c := range cols {
		conv[i] = converterFor(c.DuckDBType)
	}
	batch := pipeline.Batch{Rows: make([][]any, 0, batchSize)}
	var offset int64
	scratch := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range scratch {
		ptrs[i] = &scratch[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("read %s: row %d: %w", q.what, offset, err)
		}
		row := make([]any, len(cols))
		for i, v := range scratch {
			row[i] = conv[i](v)
			scratch[i] = nil
		}
		batch.Rows = append(batch.Rows, row)
		offset++
		if len(batch.Rows) == batchSize {
			if err := fn(batch); err != nil {
				return err
			}
			batch = pipeline.Batch{Offset: offset, Rows: make([][]any, 0, batchSize)}
		}
	}
	if err := rows.Err(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return fmt.Errorf("read %s: %w", q.what, err)
	}
	if len(batch.Rows) > 0 {
		return fn(batch)
	}
	return ctx.Err()
}

// Close closes the embedded database.
func (q *queryReader) Close() error {
	if q.db == nil {
		return nil
	}
	err := q.db.Close()
	q.db = nil
	if err != nil {
		return fmt.Errorf("close %s: %w", q.what, err)
	}
	return nil
}

// converterFor returns the function that turns a scanned value of a column
// of DuckDB type typ into a JSON-ready value (see pipeline.Batch).
func converterFor(typ string) func(any) any {
	t := strings.ToUpper(typ)
	switch {
	case t == "DATE":
		return func(v any) any {
			if tm, ok := v.(time.Time); ok {
				return tm.Format(time.DateOnly)
			}
			return jsonValue(v)
		}
	case t == "TIME" || strings.HasPrefix(t, "TIME "):
		return func(v any) any {
			if tm, ok := v.(time.Time); ok {
				return tm.Format("15:04:05.999999")
			}
			return jsonValue(v)
		}
	}
	return jsonValue
}

// jsonValue normalises one scanned DuckDB value.
func jsonValue(v any) any {
	switch x := v.(type) {
	case nil, bool, int64, uint64, float64, string, []byte, json.Number:
		return x
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case int:
		return int64(x)
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	case float32:
		return float64(x)
	case *big.Int:
		return json.Number(x.String())
	case duckdb.Decimal:
		return json.Number(x.String())
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case duckdb.Interval:
		return fmt.Sprintf("P%dM%dDT%dUS", x.Months, x.Days, x.Micros)
	case duckdb.UUID:
		return x.String()
	case *duckdb.UUID:
		return x.String()
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonValue(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonValue(e)
		}
		return out
	case duckdb.Map:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(jsonValue(k))] = jsonValue(e)
		}
		return out
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}

// quoteString quotes s as a SQL string literal.
func quoteString(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// stringList renders paths as a DuckDB list of string literals.
func stringList(paths []string) string {
	q := make([]string, len(paths))
	for i, p := range paths {
		q[i] = quoteString(p)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// errNoFiles is wrapped when a path or glob names no file.
var errNoFiles = errors.New("no such file")
