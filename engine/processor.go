package engine

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/taskpipe/taskpipe/api"
)

// Job is one run handed to a processor.
type Job struct {
	RunID   string
	GroupID string // empty for a run outside any group
	// Input is the run as it was submitted, with TaskSpec resolved (the
	// group's default applied); TaskSpec is never nil.
	Input api.TaskRunInput
	// SpecHash identifies the resolved task spec.
	SpecHash string
	// Attempt counts executions of this run, starting at 1.
	Attempt int
	// Checkpoint is what the processor saved with Reporter.Checkpoint in an
	// earlier attempt (an upstream run id, say), or nil.
	Checkpoint json.RawMessage
	// Deadline is when the run times out; the engine fails it then.
	Deadline time.Time
}

// Outcome is how one job ended.
type Outcome struct {
	// Output is the result of a completed run; nil when Err is set.
	Output *api.Output
	// Err fails the run. Wrap it with Transient to ask for a retry.
	Err error
	// Cached marks an output served from the result cache.
	Cached bool
	// Usage records what the run consumed (tokens, upstream calls); it is
	// stored with the run and may be nil.
	Usage map[string]any
}

// Reporter receives what a processor learns about its jobs. Its methods are
// safe for concurrent use and never block for long: outcomes are queued and
// committed in batches.
type Reporter interface {
	// Complete records the outcome of a job. Each job is completed once;
	// later calls for the same run are ignored.
	Complete(runID string, o Outcome)
	// Progress records a progress message (kind is one of plan, search,
	// result, tool_call, exec_status) shown on the run's event stream.
	Progress(runID, kind, message string)
	// Checkpoint durably saves processor state for a run before the
	// processor relies on it, such as the id of an upstream run it created,
	// so that a restarted engine hands it back in Job.Checkpoint.
	Checkpoint(ctx context.Context, runID string, state json.RawMessage) error
}

// Processor executes runs for one configured processor name.
//
// The engine claims queued runs, at most the processor's concurrency limit
// at a time, and hands them over in batches through Execute. A backend that
// works one run at a time may finish them before Execute returns; a backend
// that submits batches elsewhere (a remote task group) may return at once and
// complete the jobs later. Either way each job must be completed exactly once
// through the Reporter, or abandoned when ctx is cancelled (the engine then
// runs it again after a restart: execution is at-least-once).
type Processor interface {
	// Execute starts the jobs. It must not block the caller for longer than
	// it takes to hand the jobs to its workers.
	Execute(ctx context.Context, jobs []Job, r Reporter)
}

// Closer is implemented by processors that hold resources (a child process,
// an open stream) and must release them when the engine stops.
type Closer interface {
	Close() error
}

// transientError marks an error worth retrying.
type transientError struct {
	err        error
	retryAfter time.Duration
}

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// Transient marks err as a transient failure: the engine retries the run with
// exponential backoff, waiting at least retryAfter (zero for no minimum).
func Transient(err error, retryAfter time.Duration) error {
	if err == nil {
		return nil
	}
	return &transientError{err: err, retryAfter: retryAfter}
}

// IsTransient reports whether err was marked with Transient and the minimum
// wait it asked for.
func IsTransient(err error) (bool, time.Duration) {
	var t *transientError
	if errors.As(err, &t) {
		return true, t.retryAfter
	}
	return false, 0
}
