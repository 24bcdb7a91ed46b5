package sqlite

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/taskpipe/taskpipe/store"
)

// ListEvents returns up to limit events of a group after afterSeq in order,
// run state events with their run as it is now (without its spec). It
// returns store.ErrNotFound for an unknown group.
func (s *Store) ListEvents(ctx context.Context, groupID string, afterSeq int64,
	limit int) ([]store.Event, error) {
	if err := s.groupExists(ctx, groupID); err != nil {
		return nil, fmt.Errorf("list events of group %s: %w", groupID, err)
	}
	if limit <= 0 {
		return nil, nil
	}
	st, err := s.readStmt(ctx, `SELECT e.seq, e.kind, e.run_id, e.status, e.at, `+runCols+`
		FROM events e LEFT JOIN runs r ON r.id = e.run_id
		LEFT JOIN run_outputs o ON o.ord = r.ord
		WHERE e.group_id = ? AND e.seq > ? ORDER BY e.seq LIMIT ?`)
	if err != nil {
		return nil, fmt.Errorf("list events of group %s: %w", groupID, err)
	}
	rows, err := st.QueryContext(ctx, groupID, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("list events of group %s: %w", groupID, err)
	}
	defer rows.Close()
	events := make([]store.Event, 0, min(limit, 1024))
	for rows.Next() {
		var (
			ev     store.Event
			kind   string
			runID  *string
			status []byte
			at     int64
			row    runRow
		)
		dest := append([]any{&ev.Seq, &kind, &runID, &status, &at}, row.dest()...)
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("list events of group %s: %w", groupID, err)
		}
		ev.GroupID = groupID
		ev.Kind = store.EventKind(kind)
		ev.At = fromMicros(at)
		if runID != nil {
			ev.RunID = *runID
		}
		if row.valid() {
			run := row.run()
			ev.Run = &run
		}
		if len(status) > 0 {
			ev.Status = new(store.GroupSnapshot)
			if err := json.Unmarshal(status, ev.Status); err != nil {
				return nil, fmt.Errorf("decode event %d of group %s: %w", ev.Seq, groupID, err)
			}
		}
		events = append(events, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list events of group %s: %w", groupID, err)
	}
	return events, nil
}
