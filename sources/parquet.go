package sources

import (
	"context"

	"github.com/taskpipe/taskpipe/pipeline"
)

// ParquetOptions configures a Parquet source.
type ParquetOptions struct {
	// Paths are files or globs; all files must share one schema (columns
	// are unified by name).
	Paths []string
}

// Parquet reads the rows of one or more Parquet files in file order.
type Parquet struct {
	*queryReader
	files []string
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

// Count returns the number of rows, read from the files' footers.
func (p *Parquet) Count(ctx context.Context) (int64, error) {
	return p.queryReader.count(ctx)
}
