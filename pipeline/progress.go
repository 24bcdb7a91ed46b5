package pipeline

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Progress is a snapshot of a running pipeline.
type Progress struct {
	GroupID string
	// Total is the number of source rows when known cheaply, else -1.
	Total int64
	// Read counts source rows read so far.
	Read int64
	// Skipped, Invalid and Duplicates count rows that need no run.
	Skipped    int64
	Invalid    int64
	Duplicates int64
	// Submitted and Reattached count rows with a run to wait for.
	Submitted  int64
	Reattached int64
	// Completed, Failed and Cancelled count results written by this run.
	Completed int64
	Failed    int64
	Cancelled int64
	Elapsed   time.Duration
	// Rate is results written per second since the start.
	Rate float64
	// ETA estimates the time left, or -1 when unknown.
	ETA time.Duration
	// Done is set on the last call.
	Done bool
}

// Running counts rows submitted or reattached whose results are not in.
func (p Progress) Running() int64 {
	return p.Submitted + p.Reattached - p.Completed - p.Failed - p.Cancelled
}

// counters are the live figures behind Progress.
type counters struct {
	total                                    atomic.Int64
	read, skipped, invalid, duplicates       atomic.Int64
	submitted, reattached, adopted           atomic.Int64
	completed, failed, cancelled, badOutputs atomic.Int64
	// nullKeys counts the invalid rows whose key has a NULL.
	nullKeys atomic.Int64
}

// snapshot computes a Progress at elapsed.
func (c *counters) snapshot(groupID string, elapsed time.Duration) Progress {
	p := Progress{
		GroupID: groupID, Total: c.total.Load(), Read: c.read.Load(),
		Skipped: c.skipped.Load(), Invalid: c.invalid.Load(), Duplicates: c.duplicates.Load(),
		Submitted: c.submitted.Load(), Reattached: c.reattached.Load(),
		Completed: c.completed.Load(), Failed: c.failed.Load() + c.badOutputs.Load(),
		Cancelled: c.cancelled.Load(), Elapsed: elapsed, ETA: -1,
	}
	done := p.Completed + p.Failed + p.Cancelled
	if s := elapsed.Seconds(); s > 0 {
		p.Rate = float64(done) / s
	}
	// Rows still to finish: the known total less those needing no run,
	// or, without a total, the runs in flight.
	left := p.Running()
	if p.Total >= 0 {
		left = p.Total - p.Skipped - p.Invalid - p.Duplicates - done
	}
	if p.Rate > 0 && left >= 0 {
		p.ETA = time.Duration(float64(left) / p.Rate * float64(time.Second))
	}
	return p
}

// Line renders p on one line: counts by status, rate and ETA.
func (p Progress) Line() string {
	var sb strings.Builder
	if p.Total >= 0 {
		fmt.Fprintf(&sb, "read %d/%d", p.Read, p.Total)
	} else {
		fmt.Fprintf(&sb, "read %d", p.Read)
	}
	fmt.Fprintf(&sb, " | completed %d  running %d  failed %d", p.Completed, p.Running(), p.Failed)
	if p.Cancelled > 0 {
		fmt.Fprintf(&sb, "  cancelled %d", p.Cancelled)
	}
	if p.Invalid > 0 {
		fmt.Fprintf(&sb, "  invalid %d", p.Invalid)
	}
	if p.Skipped > 0 {
		fmt.Fprintf(&sb, "  skipped %d", p.Skipped)
	}
	fmt.Fprintf(&sb, " | %.1f rows/s", p.Rate)
	if p.ETA >= 0 && !p.Done {
		fmt.Fprintf(&sb, "  ETA %s", p.ETA.Round(time.Second))
	}
	fmt.Fprintf(&sb, "  %s", p.Elapsed.Round(100*time.Millisecond))
	return sb.String()
}

// TerminalProgress returns a Progress callback that redraws one line on a
// terminal and ends it with a newline when the pipeline is done.
func TerminalProgress(w io.Writer) func(Progress) {
	var mu sync.Mutex
	return func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, "\r\033[K%s", p.Line())
		if p.Done {
			fmt.Fprintln(w)
		}
	}
}

// LogProgress returns a Progress callback that logs one line per call, for
// output that is not a terminal (CI logs, Airflow task logs).
func LogProgress(log *slog.Logger) func(Progress) {
	return func(p Progress) {
		msg := "pipeline progress"
		if p.Done {
			msg = "pipeline finished"
		}
		attrs := []any{"group_id", p.GroupID, "read", p.Read}
		if p.Total >= 0 { // a query's row count is not known ahead
			attrs = append(attrs, "total", p.Total)
		}
		attrs = append(attrs, "completed", p.Completed, "running", p.Running(),
			"failed", p.Failed, "cancelled", p.Cancelled, "invalid", p.Invalid,
			"skipped", p.Skipped, "rows_per_s", fmt.Sprintf("%.1f", p.Rate))
		if p.ETA >= 0 {
			attrs = append(attrs, "eta", p.ETA.Round(time.Second))
		}
		log.Info(msg, attrs...)
	}
}
