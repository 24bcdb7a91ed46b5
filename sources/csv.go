package sources

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/taskpipe/taskpipe/pipeline"
)

// CSVOptions configures a CSV source.
type CSVOptions struct {
	// Paths are files or globs; all files share one layout.
	Paths []string
	// Delimiter is the one-character field separator; empty detects it.
	Delimiter string
	// Header says whether the first line names the columns; nil detects
	// it. Without a header the columns are column0, column1, ...
	Header *bool
}

// CSV reads the rows of one or more CSV files in file order. Column types
// are detected by DuckDB's CSV sniffer (BIGINT, DOUBLE, DATE, BOOLEAN,
// VARCHAR, ...) over the whole of each file's sample.
type CSV struct {
	*queryReader
	files []string
}

var _ pipeline.Source = (*CSV)(nil)

// NewCSV checks opts and opens the source.
func NewCSV(opts CSVOptions) (*CSV, error) {
	files, err := expandPaths("csv", opts.Paths)
	if err != nil {
		return nil, err
	}
	if opts.Delimiter != "" && utf8.RuneCountInString(opts.Delimiter) != 1 {
		return nil, fmt.Errorf("csv source: delimiter: must be one character, not %q", opts.Delimiter)
	}
	if opts.Delimiter == "\n" || opts.Delimiter == "\r" || opts.Delimiter == `"` {
		return nil, fmt.Errorf("csv source: delimiter: %q cannot separate fields", opts.Delimiter)
	}
	args := []string{stringList(files)}
	if opts.Delimiter != "" {
		args = append(args, "delim = "+quoteString(opts.Delimiter))
	}
	if opts.Header != nil {
		args = append(args, fmt.Sprintf("header = %t", *opts.Header))
	}
	if len(files) > 1 {
		args = append(args, "union_by_name = true")
	}
	q := "SELECT * FROM read_csv(" + strings.Join(args, ", ") + ")"
	r, err := openQueryReader("", q, describeFiles("csv", files))
	if err != nil {
		return nil, err
	}
	return &CSV{queryReader: r, files: files}, nil
}

// Files returns the files the source reads, globs expanded.
func (c *CSV) Files() []string { return c.files }
