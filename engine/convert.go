package engine

import (
	"fmt"
	"strconv"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// runMeta is the part of a stored input the status object echoes.
type runMeta struct {
	Metadata api.Metadata `json:"metadata"`
}

// taskRun converts a stored run into the API's status object.
func taskRun(r *store.Run) api.TaskRun {
	tr := api.TaskRun{
		RunID:         r.ID,
		InteractionID: r.ID,
		Status:        r.Status,
		IsActive:      r.Status.Active(),
		Processor:     r.Processor,
		CreatedAt:     api.TimestampPtr(r.CreatedAt),
		ModifiedAt:    api.TimestampPtr(r.ModifiedAt),
		Cached:        r.Cached,
	}
	if r.GroupID != "" {
		g := r.GroupID
		tr.TaskGroupID = &g
	}
	var meta runMeta
	if gojson.Unmarshal(r.Input, &meta) == nil {
		tr.Metadata = meta.Metadata
	}
	if len(r.Warnings) > 0 {
		_ = gojson.Unmarshal(r.Warnings, &tr.Warnings)
	}
	if len(r.Error) > 0 && r.Status != api.StatusCompleted {
		var eo api.ErrorObject
		if gojson.Unmarshal(r.Error, &eo) == nil {
			tr.Error = &eo
		}
	}
	return tr
}

// runInput returns the run's input as submitted, with the resolved spec.
func runInput(r *store.Run) (api.TaskRunInput, error) {
	var in api.TaskRunInput
	if err := gojson.Unmarshal(r.Input, &in); err != nil {
		return in, fmt.Errorf("decode stored input of %s: %w", r.ID, err)
	}
	if len(r.Spec) > 0 {
		var ts api.TaskSpec
		if err := gojson.Unmarshal(r.Spec, &ts); err != nil {
			return in, fmt.Errorf("decode stored spec of %s: %w", r.ID, err)
		}
		in.TaskSpec = &ts
	}
	return in, nil
}

// runOutput decodes a completed run's output, nil for any other run.
func runOutput(r *store.Run) (*api.Output, error) {
	if r.Status != api.StatusCompleted || len(r.Output) == 0 {
		return nil, nil
	}
	var out api.Output
	if err := gojson.Unmarshal(r.Output, &out); err != nil {
		return nil, fmt.Errorf("decode stored output of %s: %w", r.ID, err)
	}
	return &out, nil
}

// groupStatus converts counts into the API's status summary.
func groupStatus(numRuns int64, counts map[api.RunStatus]int64, modifiedAt time.Time) api.TaskGroupStatus {
	st := api.TaskGroupStatus{
		NumTaskRuns:         numRuns,
		TaskRunStatusCounts: make(map[api.RunStatus]int64, len(counts)),
		ModifiedAt:          api.TimestampPtr(modifiedAt),
	}
	for s, n := range counts {
		if n <= 0 {
			continue
		}
		st.TaskRunStatusCounts[s] = n
		if s.Active() {
			st.IsActive = true
		}
	}
	msg := statusMessage(st)
	st.StatusMessage = &msg
	return st
}

// statusMessage is a one-line human summary of a group's status.
func statusMessage(st api.TaskGroupStatus) string {
	if st.NumTaskRuns == 0 {
		return "no runs"
	}
	done := st.TaskRunStatusCounts[api.StatusCompleted] +
		st.TaskRunStatusCounts[api.StatusFailed] + st.TaskRunStatusCounts[api.StatusCancelled]
	if st.IsActive {
		return fmt.Sprintf("%d of %d runs finished", done, st.NumTaskRuns)
	}
	return fmt.Sprintf("all %d runs finished", st.NumTaskRuns)
}

// taskGroup converts a stored group into the API object.
func taskGroup(g store.Group) api.TaskGroup {
	return api.TaskGroup{
		TaskGroupID: g.ID,
		Status:      groupStatus(g.NumRuns, g.Counts, g.ModifiedAt),
		CreatedAt:   api.TimestampPtr(g.CreatedAt),
		Metadata:    g.Metadata,
	}
}

// snapshotStatus converts an event's stored snapshot.
func snapshotStatus(s *store.GroupSnapshot) api.TaskGroupStatus {
	return groupStatus(s.NumRuns, s.Counts, s.ModifiedAt)
}

// formatCursor renders a sequence number as a cursor; 0 is null.
func formatCursor(seq int64) *string {
	if seq <= 0 {
		return nil
	}
	s := strconv.FormatInt(seq, 10)
	return &s
}

// parseCursor reads a last_event_id. Empty means the beginning; a cursor
// past last is unknown.
func parseCursor(cursor string, last int64) (int64, error) {
	if cursor == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(cursor, 10, 64)
	if err != nil || n < 0 {
		return 0, api.Errorf(api.ErrInvalid, "last_event_id: malformed cursor %q: cursors are the event_id values of this stream", cursor)
	}
	if n > last {
		return 0, api.Errorf(api.ErrInvalid, "last_event_id: unknown cursor %q: this stream's newest event is %d", cursor, last)
	}
	return n, nil
}
