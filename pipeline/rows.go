package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/sinks"
	"github.com/taskpipe/taskpipe/specs"
)

// rowBuilder turns runs and invalid source rows into sink rows.
type rowBuilder struct {
	table    specs.Table
	specHash string
}

func newRowBuilder(table specs.Table, specHash string) *rowBuilder {
	return &rowBuilder{table: table, specHash: specHash}
}

// invalidRow is the row of a source row that never became a run.
func (b *rowBuilder) invalidRow(r mappedRow) sinks.Row {
	return sinks.Row{Key: r.KeyValues, Status: StatusInvalidInput, Error: r.Invalid,
		InputFingerprint: r.Fingerprint, SpecHash: b.specHash}
}

// runRow is the row of a finished run, and the status it records. A
// completed run whose output does not fit the typed columns becomes an
// invalid_output row that says why (the run is paid for; it is submitted
// again only with --retry-failed).
func (b *rowBuilder) runRow(s rowState, ev *api.TaskRunEvent) (sinks.Row, string, error) {
	key, err := decodeKeyValues(s.KeyValues)
	if err != nil {
		return sinks.Row{}, "", err
	}
	run := ev.Run
	row := sinks.Row{
		Key: key, RunID: run.RunID, Status: string(run.Status), Processor: run.Processor,
		CreatedAt: timeOf(run.CreatedAt), FinishedAt: timeOf(run.ModifiedAt),
		InputFingerprint: s.Fingerprint, SpecHash: s.SpecHash,
	}
	if run.Error != nil {
		row.Error = run.Error.Message
	}
	if run.Status == api.StatusCompleted {
		switch {
		case ev.Output == nil:
			row.Status, row.Error = StatusInvalidOutput, "the completed run has no output"
		default:
			if vals, err := b.table.OutputValues(ev.Output.Content); err != nil {
				row.Status, row.Error = StatusInvalidOutput, err.Error()
			} else {
				row.Output, row.OutputValues = ev.Output.Content, vals
			}
			row.Basis = ev.Output.Basis
		}
	}
	return row, row.Status, nil
}

// timeOf parses an API timestamp; the zero time (NULL) when absent.
func timeOf(s *string) time.Time {
	if s == nil {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, *s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// writeAll writes rows to every sink.
func writeAll(ctx context.Context, sinkList []Sink, rows []sinks.Row) error {
	if len(rows) == 0 {
		return nil
	}
	for _, s := range sinkList {
		if err := s.Write(ctx, rows); err != nil {
			return fmt.Errorf("write %d rows: %w", len(rows), err)
		}
	}
	return nil
}
