package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// ListEvents returns up to limit events of a group after afterSeq in order.
// Run state events carry their run as it is now, read without its input,
// output or spec: see eventRunCols for what is filled. It returns
// store.ErrNotFound for an unknown group.
func (s *Store) ListEvents(ctx context.Context, groupID string, afterSeq int64,
	limit int) ([]store.Event, error) {
	if err := s.groupExists(ctx, groupID); err != nil {
		return nil, fmt.Errorf("list events of group %s: %w", groupID, err)
	}
	if limit <= 0 {
		return nil, nil
	}
	st, err := s.readStmt(ctx, `SELECT e.seq, e.kind, e.run_id, e.status, e.at, `+eventRunCols+`
		FROM events e LEFT JOIN runs r ON r.ord = e.run_ord
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
	var (
		v    [5 + len(eventRunFields)]any
		dest [len(v)]any
	)
	for i := range v {
		dest[i] = &v[i]
	}
	for rows.Next() {
		clear(v[:])
		if err := rows.Scan(dest[:]...); err != nil {
			return nil, fmt.Errorf("list events of group %s: %w", groupID, err)
		}
		ev := store.Event{GroupID: groupID, Seq: integer(v[0]), Kind: store.EventKind(text(v[1])),
			RunID: text(v[2]), At: fromMicros(integer(v[4]))}
		if v[5] != nil {
			ev.Run = eventRun(v[5:])
		}
		if status := jsonValue(v[3]); len(status) > 0 {
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

// eventRunFields are the columns of a run that an event log reads, in
// order; eventRunCols selects them from runs r.
var eventRunFields = [...]string{"id", "group_id", "seq", "processor", "status", "metadata",
	"warnings", "error", "cached", "attempt", "created_at", "modified_at", "finished_at"}

var eventRunCols = "r." + strings.Join(eventRunFields[:], ", r.")

// eventRun builds the run of a run state event from eventRunFields. Its
// Input holds only the input's metadata, as {"metadata": ...}.
func eventRun(v []any) *store.Run {
	r := &store.Run{
		ID:         text(v[0]),
		GroupID:    text(v[1]),
		Seq:        integer(v[2]),
		Processor:  text(v[3]),
		Status:     api.RunStatus(text(v[4])),
		Warnings:   jsonValue(v[6]),
		Error:      jsonValue(v[7]),
		Cached:     integer(v[8]) != 0,
		Attempt:    int(integer(v[9])),
		CreatedAt:  fromMicros(integer(v[10])),
		ModifiedAt: fromMicros(integer(v[11])),
		FinishedAt: fromMicros(integer(v[12])),
	}
	if meta := jsonValue(v[5]); len(meta) > 0 {
		r.Input = slices.Concat([]byte(`{"metadata":`), meta, []byte(`}`))
	}
	return r
}
