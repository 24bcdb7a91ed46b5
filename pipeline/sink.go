package pipeline

import (
	"context"

	"github.com/taskpipe/taskpipe/sinks"
	"github.com/taskpipe/taskpipe/specs"
)

// Sink is where result rows go; the kinds of package sinks implement it.
// The pipeline calls Open once with the table it writes, then Write from one
// goroutine at a time; the caller that opened the sink closes it.
type Sink interface {
	// Open creates the table (or file) or checks that an existing one has
	// the table's columns.
	Open(ctx context.Context, table specs.Table) error
	// Write upserts rows: a row replaces any earlier row with its key. For
	// a DuckDB table the rows are visible to other readers on return.
	Write(ctx context.Context, rows []sinks.Row) error
}

var (
	_ Sink = (*sinks.DuckDB)(nil)
	_ Sink = (*sinks.Parquet)(nil)
)
