package api

import (
	"encoding/json"
	"fmt"
)

// Event types carried over Server-Sent Events. The `type` field inside the
// JSON payload is the discriminator; the SSE `event:` line repeats it.
const (
	EventRunState      = "task_run.state"
	EventGroupStatus   = "task_group_status"
	EventProgressStats = "task_run.progress_stats"
	EventError         = "error"
	// EventProgressPrefix starts the five progress message types:
	// .plan, .search, .result, .tool_call and .exec_status.
	EventProgressPrefix = "task_run.progress_msg."
)

// Event is one message of an SSE stream: TaskRunEvent, TaskGroupStatusEvent,
// ProgressMessageEvent, ProgressStatsEvent or ErrorEvent.
type Event interface {
	// EventType returns the value of the payload's type field.
	EventType() string
}

// TaskRunEvent reports a run's state. EventID is the group cursor for runs in
// a group stream and null on a run's own stream.
type TaskRunEvent struct {
	Type    string        `json:"type"`
	EventID *string       `json:"event_id"`
	Input   *TaskRunInput `json:"input"`
	Run     TaskRun       `json:"run"`
	Output  *Output       `json:"output"`
}

// TaskGroupStatusEvent reports a change of a group's status summary.
type TaskGroupStatusEvent struct {
	Type    string          `json:"type"`
	EventID string          `json:"event_id"`
	Status  TaskGroupStatus `json:"status"`
}

// ProgressMessageEvent is one progress message of a running run.
type ProgressMessageEvent struct {
	Type      string  `json:"type"`
	Message   string  `json:"message"`
	Timestamp *string `json:"timestamp"`
}

// SourceStats counts the sources a run has looked at.
type SourceStats struct {
	NumSourcesConsidered *int64   `json:"num_sources_considered"`
	NumSourcesRead       *int64   `json:"num_sources_read"`
	SourcesReadSample    []string `json:"sources_read_sample"`
}

// ProgressStatsEvent is the latest progress figure of a running run.
type ProgressStatsEvent struct {
	Type          string      `json:"type"`
	SourceStats   SourceStats `json:"source_stats"`
	ProgressMeter float64     `json:"progress_meter"`
}

// ErrorEvent reports an error inside a stream.
type ErrorEvent struct {
	Type  string      `json:"type"`
	Error ErrorObject `json:"error"`
}

// EventType implements Event.
func (e *TaskRunEvent) EventType() string { return typeOr(e.Type, EventRunState) }

// EventType implements Event.
func (e *TaskGroupStatusEvent) EventType() string { return typeOr(e.Type, EventGroupStatus) }

// EventType implements Event.
func (e *ProgressMessageEvent) EventType() string { return e.Type }

// EventType implements Event.
func (e *ProgressStatsEvent) EventType() string { return typeOr(e.Type, EventProgressStats) }

// EventType implements Event.
func (e *ErrorEvent) EventType() string { return typeOr(e.Type, EventError) }

// typeOr returns the payload's own type, or def when it was left empty.
func typeOr(typ, def string) string {
	if typ == "" {
		return def
	}
	return typ
}

// newEvent returns an empty event of the given type, or nil for a type
// without a concrete event.
func newEvent(typ string) Event {
	switch {
	case typ == EventRunState:
		return &TaskRunEvent{}
	case typ == EventGroupStatus:
		return &TaskGroupStatusEvent{}
	case typ == EventProgressStats:
		return &ProgressStatsEvent{}
	case typ == EventError:
		return &ErrorEvent{}
	case len(typ) > len(EventProgressPrefix) && typ[:len(EventProgressPrefix)] == EventProgressPrefix:
		return &ProgressMessageEvent{}
	}
	return nil
}

// DecodeEvent decodes one SSE data payload into its concrete event type.
func DecodeEvent(data []byte) (Event, error) {
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	ev := newEvent(head.Type)
	if ev == nil {
		return nil, fmt.Errorf("decode event: unknown type %q", head.Type)
	}
	if err := json.Unmarshal(data, ev); err != nil {
		return nil, fmt.Errorf("decode %s event: %w", head.Type, err)
	}
	return ev, nil
}
