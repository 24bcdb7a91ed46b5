package pipeline

import (
	"context"
	"fmt"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/sinks"
)

// EmptyAtOpen is implemented by sinks that can tell they held no rows when
// opened: a new, renamed or dropped table, or an added Parquet sink.
type EmptyAtOpen interface {
	OpenedEmpty() bool
}

var (
	_ EmptyAtOpen = (*sinks.DuckDB)(nil)
	_ EmptyAtOpen = (*sinks.Parquet)(nil)
)

// settledStatuses are the row states whose result an earlier run wrote and
// a re-run skips.
var settledStatuses = map[string]bool{
	string(api.StatusCompleted): true, string(api.StatusFailed): true,
	string(api.StatusCancelled): true, StatusInvalidOutput: true,
}

// backfill writes into the sinks that opened empty the rows that earlier
// runs of this pipeline finished in its task group, since a re-run skips
// those rows: without it a new or renamed table would stay without them.
// It reads the group's runs once, with outputs, and writes only runs whose
// row still names them.
func (r *runner) backfill(ctx context.Context) error {
	var empty []Sink
	for _, s := range r.opts.Sinks {
		if e, ok := s.(EmptyAtOpen); ok && e.OpenedEmpty() {
			empty = append(empty, s)
		}
	}
	if len(empty) == 0 || r.groupID == "" {
		return nil
	}
	if group, n, err := r.state.settledElsewhere(ctx, r.groupID, r.specHash); err != nil {
		return err
	} else if n > 0 {
		return fmt.Errorf("%w: a sink started empty, but %d rows finished in task group %s, "+
			"which this target cannot read: run with the target that ran them to fill the "+
			"sink, or remove the state directory to run every row again here",
			ErrGroupLost, n, group)
	}

	var buf []*api.TaskRunEvent
	written := 0
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		ids := make([]string, len(buf))
		for i, ev := range buf {
			ids[i] = ev.Run.RunID
		}
		states, err := r.state.byRunIDs(ctx, ids)
		if err != nil {
			return err
		}
		rows := make([]sinks.Row, 0, len(buf))
		for _, ev := range buf {
			s, ok := states[ev.Run.RunID]
			if !ok || !settledStatuses[s.Status] || s.SpecHash != r.specHash {
				continue
			}
			row, _, err := r.builder.runRow(s, ev)
			if err != nil {
				return fmt.Errorf("build row of run %s: %w", ev.Run.RunID, err)
			}
			rows = append(rows, row)
		}
		buf = buf[:0]
		written += len(rows)
		return writeAll(ctx, empty, rows)
	}
	err := r.opts.Groups.GroupRuns(ctx, r.groupID, api.GroupRunsQuery{IncludeOutput: true},
		func(ev *api.TaskRunEvent) error {
			if !ev.Run.Status.Terminal() {
				return nil
			}
			buf = append(buf, ev)
			if len(buf) >= writeBatch {
				return flush()
			}
			return nil
		})
	if err != nil {
		return fmt.Errorf("back-fill new sinks from group %s: %w", r.groupID, err)
	}
	if err := flush(); err != nil {
		return err
	}
	if written > 0 {
		r.log.Info("wrote rows finished by earlier runs into sinks that started empty",
			"rows", written, "group_id", r.groupID)
	}
	return nil
}
