package pipeline

import "context"

// Column is one column of a source: its name and its DuckDB SQL type
// (VARCHAR, BIGINT, DATE, DOUBLE[], STRUCT(...), ...), as DuckDB describes
// the source's rows.
type Column struct {
	Name       string `json:"name"`
	DuckDBType string `json:"duckdb_type"`
}

// Batch is a run of consecutive source rows. Each row holds one value per
// column, in column order, normalised to what encoding/json accepts: nil,
// bool, int64, uint64, float64, string, json.Number (DECIMAL and HUGEINT),
// []byte (BLOB), []any (LIST, ARRAY) and map[string]any (STRUCT, MAP).
// DATE values are "YYYY-MM-DD" strings, TIMESTAMP and TIME values RFC 3339
// strings.
type Batch struct {
	// Offset is the position of the first row in the source, from 0.
	Offset int64
	Rows   [][]any
}

// Source is where the rows of a pipeline come from. The pipeline calls
// Columns once to plan the mapping and the table, then Read once, then
// Close. Implementations live in package sources, one file per kind.
type Source interface {
	// Columns returns the source's columns in row order without reading
	// its rows (beyond what type detection needs). Errors name the file or
	// query at fault.
	Columns(ctx context.Context) ([]Column, error)
	// Read streams every row in source order to fn in batches of at most
	// batchSize rows, holding no more than about one batch in Go memory. A
	// Batch and its rows are owned by fn until it returns and are not
	// reused afterwards. Read returns fn's first error, ctx.Err() when ctx
	// is done, or the read error naming the file.
	Read(ctx context.Context, batchSize int, fn func(Batch) error) error
	// Close releases the source. It is safe to call more than once.
	Close() error
}

// Counter is implemented by sources that know their row count before the
// rows are read: Parquet from file metadata, CSV from the check that reads
// every file through before any row is used. `taskpipe run --dry-run`
// prints the count, and progress shows it as the total.
type Counter interface {
	Count(ctx context.Context) (int64, error)
}
