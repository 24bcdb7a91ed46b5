package api

import (
	"context"
	"time"
)

// GroupRunsQuery selects what the runs stream of a group returns.
type GroupRunsQuery struct {
	// LastEventID resumes after this cursor; empty starts at the beginning.
	LastEventID string
	// Status keeps only runs in this status; empty keeps all.
	Status RunStatus
	// IncludeInput fills each event's input.
	IncludeInput bool
	// IncludeOutput fills each completed run's output.
	IncludeOutput bool
}

// GroupEventsQuery selects what the events stream of a group returns.
type GroupEventsQuery struct {
	// LastEventID resumes after this cursor; empty starts at the beginning.
	LastEventID string
	// Timeout closes the stream after this long; zero means the server's
	// limit (one hour).
	Timeout time.Duration
}

// TaskGroups is the set of task group calls that both the in-process engine
// and the HTTP client implement, so that a caller (the pipeline, the
// parallel processor) runs the same code against either.
//
// Streaming calls invoke fn for every event in order and return when the
// stream ends (nil), when fn returns an error (that error) or when ctx is
// done (ctx.Err()).
type TaskGroups interface {
	CreateTaskGroup(ctx context.Context, req CreateTaskGroupRequest) (TaskGroup, error)
	GetTaskGroup(ctx context.Context, groupID string) (TaskGroup, error)
	AddRuns(ctx context.Context, groupID string, req TaskGroupRunRequest) (TaskGroupRunResponse, error)
	GroupRuns(ctx context.Context, groupID string, q GroupRunsQuery, fn func(*TaskRunEvent) error) error
	GroupEvents(ctx context.Context, groupID string, q GroupEventsQuery, fn func(Event) error) error
}

// TaskRuns is the set of single-run calls that both the engine and the HTTP
// client implement.
type TaskRuns interface {
	CreateRun(ctx context.Context, in TaskRunInput) (TaskRun, error)
	GetRun(ctx context.Context, runID string) (TaskRun, error)
	GetRunInput(ctx context.Context, runID string) (TaskRunInput, error)
	// GetRunResult waits up to timeout for the run to finish. It returns
	// ErrTimeout while the run is active and ErrNotFound when it failed.
	GetRunResult(ctx context.Context, runID string, timeout time.Duration) (TaskRunResult, error)
	RunEvents(ctx context.Context, runID string, fn func(Event) error) error
}
