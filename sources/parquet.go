package sources

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/taskpipe/taskpipe/pipeline"
)

// ParquetOptions configures a Parquet source.
type ParquetOptions struct {
	// Paths are files or globs; all files must share one schema (columns
	// are unified by name, and a column may be missing from some files).
	Paths []string
}

// Parquet reads the rows of one or more Parquet files in file order.
type Parquet struct {
	*queryReader
	files []string
	// checked says every file was found to give each column one type.
	checked bool
}

var (
	_ pipeline.Source  = (*Parquet)(nil)
	_ pipeline.Counter = (*Parquet)(nil)
)

// NewParquet checks opts (every path names an existing file, every glob at
// least one) and opens the source.
func NewParquet(opts ParquetOptions) (*Parquet, error) {
	files, err := expandPaths("parquet", opts.Paths)
	if err != nil {
		return nil, err
	}
	what := describeFiles("parquet", files)
	q := "SELECT * FROM read_parquet(" + stringList(files) + ", union_by_name = true)"
	r, err := openQueryReader("", q, what)
	if err != nil {
		return nil, err
	}
	return &Parquet{queryReader: r, files: files}, nil
}

// Files returns the files the source reads, globs expanded.
func (p *Parquet) Files() []string { return p.files }

// Columns describes the columns of the files together, after checking from
// each file's footer that no two files give a column different types:
// DuckDB would pick one type for both and fail (or quietly change the
// values) when it meets the other file's rows.
func (p *Parquet) Columns(ctx context.Context) ([]pipeline.Column, error) {
	if !p.checked && len(p.files) > 1 {
		if err := p.checkSchemas(ctx); err != nil {
			return nil, err
		}
	}
	p.checked = true
	return p.queryReader.Columns(ctx)
}

// Read streams the rows of the files in batches of batchSize, checking
// the files' column types first as Columns does.
func (p *Parquet) Read(ctx context.Context, batchSize int, fn func(pipeline.Batch) error) error {
	if _, err := p.Columns(ctx); err != nil {
		return err
	}
	return p.queryReader.Read(ctx, batchSize, fn)
}

// checkSchemas compares the column types of every file with those of the
// first file that has the column, and reports each column that differs,
// naming both files.
func (p *Parquet) checkSchemas(ctx context.Context) error {
	type firstSeen struct{ file, typ string }
	seen := map[string]firstSeen{}
	reported := map[string]bool{}
	var problems []error
	for _, f := range p.files {
		q := "SELECT * FROM read_parquet(" + quoteString(f) + ")"
		cols, err := p.describe(ctx, q, fmt.Sprintf("parquet %q", f))
		if err != nil {
			return err
		}
		for _, c := range cols {
			name := strings.ToLower(c.Name)
			first, ok := seen[name]
			switch {
			case !ok:
				seen[name] = firstSeen{file: f, typ: c.DuckDBType}
			case reported[name] || sameParquetType(first.typ, c.DuckDBType):
			default:
				reported[name] = true
				problems = append(problems, fmt.Errorf(
					"parquet source: column %q is %s in %q but %s in %q; give it one type in every "+
						"file, or read the files through a duckdb source that casts it",
					c.Name, first.typ, first.file, c.DuckDBType, f))
			}
		}
	}
	return errors.Join(problems...)
}

// integerTypes and floatTypes are the DuckDB types a column may mix across
// files: DuckDB reads them all as the widest, which holds every value.
var (
	integerTypes = map[string]bool{
		"TINYINT": true, "SMALLINT": true, "INTEGER": true, "BIGINT": true, "HUGEINT": true,
		"UTINYINT": true, "USMALLINT": true, "UINTEGER": true, "UBIGINT": true, "UHUGEINT": true,
	}
	floatTypes = map[string]bool{"FLOAT": true, "DOUBLE": true}
)

// sameParquetType reports whether two files' types of one column read alike:
// equal, or both integers, or both floating point.
func sameParquetType(a, b string) bool {
	return a == b || (integerTypes[a] && integerTypes[b]) || (floatTypes[a] && floatTypes[b])
}

// Count returns the number of rows, read from the files' footers.
func (p *Parquet) Count(ctx context.Context) (int64, error) {
	return p.queryReader.count(ctx)
}
