// Package sinks writes the results of a pipeline's runs into typed tables:
// a DuckDB table (rows visible to SQL as soon as each batch is written) or
// a Parquet file (published whole when the sink closes). Every sink passes
// the shared suite in package sinktest.
package sinks

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/specs"
)

// Row is one result row to write: the outcome of one run, or of a source
// row that never became a run (status invalid_input, no run_id).
type Row struct {
	// Key holds the values of the table's key columns, in order, as the
	// source gave them.
	Key []any
	// RunID is empty for rows that never became a run.
	RunID, Status, Error, Processor string
	// Output is the content of the run's output: an object for json output
	// schemas, a JSON string for text ones; empty when the run did not
	// complete.
	Output json.RawMessage
	// OutputValues, when set, is Output already converted by the table's
	// OutputValues (one value per output column), so that a caller that
	// checked the output does not pay for its conversion twice.
	OutputValues []any
	// Basis is the run's basis, written to the basis column.
	Basis []api.FieldBasis
	// CreatedAt and FinishedAt are the run's times; zero writes NULL.
	CreatedAt, FinishedAt time.Time
	// InputFingerprint identifies the input the row was made from, so that
	// a re-run can tell unchanged rows; SpecHash identifies the task spec.
	InputFingerprint, SpecHash string
}

// Sink is where a pipeline writes its result rows. Open is called once
// before any Write, Close once after the last; Write is never called
// concurrently with itself.
type Sink interface {
	// Open creates the table, or checks that an existing one has the
	// table's columns and types; the error names every column that
	// differs.
	Open(ctx context.Context, t specs.Table) error
	// Write upserts a batch: the table keeps one row per key and per
	// run_id, a later row replacing an earlier one (also within the
	// batch). A row whose output does not fit its column types is
	// written with status failed and the conversion error, never failing
	// the batch.
	Write(ctx context.Context, rows []Row) error
	// Close flushes and publishes what was written and releases the sink.
	Close(ctx context.Context) error
}

// StatusFailed is the status written for a row whose output could not be
// converted to its column types.
const StatusFailed = string(api.StatusFailed)

// latestRows returns rows without those replaced by a later row of the same
// key or run_id, keeping the order of the survivors.
func latestRows(rows []Row) []Row {
	keys := make(map[string]bool, len(rows))
	runs := make(map[string]bool, len(rows))
	keep := make([]bool, len(rows))
	n := 0
	for i := len(rows) - 1; i >= 0; i-- {
		k := keyString(rows[i].Key)
		if keys[k] || (rows[i].RunID != "" && runs[rows[i].RunID]) {
			continue
		}
		keys[k] = true
		if rows[i].RunID != "" {
			runs[rows[i].RunID] = true
		}
		keep[i] = true
		n++
	}
	if n == len(rows) {
		return rows
	}
	out := make([]Row, 0, n)
	for i, r := range rows {
		if keep[i] {
			out = append(out, r)
		}
	}
	return out
}

// keyString encodes key values so that equal keys encode alike.
func keyString(key []any) string {
	var sb strings.Builder
	for _, v := range key {
		fmt.Fprintf(&sb, "%T:%v\x00", v, v)
	}
	return sb.String()
}

// tableName splits "schema.table" and quotes both parts; a name without a
// dot is a table in the current schema.
func tableName(name string) (schema, table, quoted string) {
	if i := strings.IndexByte(name, '.'); i > 0 {
		schema, table = name[:i], name[i+1:]
		return schema, table, specs.QuoteIdent(schema) + "." + specs.QuoteIdent(table)
	}
	return "", name, specs.QuoteIdent(name)
}
