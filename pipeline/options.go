package pipeline

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/specs"
)

// Defaults of Options.
const (
	DefaultChunkSize     = api.MaxRunsPerAdd
	DefaultAddsPerMinute = 2000
	DefaultBatchSize     = 1000
	DefaultFlushInterval = 250 * time.Millisecond
	DefaultProgressEvery = time.Second
)

// Options configure one pipeline run. The caller opens the source, the
// sinks and the task group client; Run owns none of them.
type Options struct {
	// Name names the pipeline in group metadata and logs.
	Name string
	// Source yields the rows. Required.
	Source Source
	// Sinks receive the result rows. Required, at least one.
	Sinks []Sink
	// Key are the source columns that identify a row. Required.
	Key []string
	// Mapping maps task input fields onto source columns or constants;
	// empty maps every column onto the field of its name.
	Mapping map[string]specs.MappingEntry
	// TaskSpec is the task every run executes.
	TaskSpec api.TaskSpec
	// Processor runs every row. Required.
	Processor string
	// Metadata is attached to every run next to the pipeline's own keys.
	Metadata api.Metadata
	// MaxCost, when positive, caps what a new task group's runs may cost
	// in US dollars (api.MetadataMaxCost); the target refuses runs beyond.
	MaxCost float64
	// Groups reaches the task groups: the in-process engine or a client.
	Groups api.TaskGroups
	// Runs, when set, is the run API of the same target: runs that finish
	// long after the runs around them are read through it one at a time.
	// Without it they are found by reading the runs stream again.
	Runs api.TaskRuns
	// Target identifies where Groups leads ("embedded", "server
	// http://host:8080", ...); the state store keeps one group per target.
	Target string
	// StateDir holds the state store. Required.
	StateDir string
	// StateLock, when the caller already holds the lock of StateDir (to
	// open an embedded engine under it), is that lock; nil makes Run take
	// it for its duration.
	StateLock *StateLock

	// Limit reads only the first Limit source rows (0: all).
	Limit int64
	// RetryFailed submits again rows whose runs failed, were cancelled or
	// gave an invalid output.
	RetryFailed bool
	// NewGroup lets a pass whose recorded task group the target no longer
	// finds (another API key, or a server that lost it) start a new group
	// and submit again the rows that waited for runs in the lost one.
	// Without it such a pass fails with ErrGroupLost.
	NewGroup bool
	// NoWait returns once every row is submitted, without waiting for
	// results; a later run (or wait) collects them.
	NoWait bool
	// ChunkSize is the most runs per add-runs call (1..1000).
	ChunkSize int
	// AddsPerMinute caps add-runs calls per minute.
	AddsPerMinute float64
	// BatchSize is the number of source rows read at a time.
	BatchSize int
	// FlushInterval is how long completed runs wait to be fetched and
	// written together.
	FlushInterval time.Duration

	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// Progress, when set, is called every ProgressEvery and once at the
	// end with Done set.
	Progress      func(Progress)
	ProgressEvery time.Duration
}

// withDefaults fills unset options and checks the required ones.
func (o Options) withDefaults() (Options, error) {
	var errs []error
	if o.Source == nil {
		errs = append(errs, errors.New("source: required"))
	}
	if len(o.Sinks) == 0 {
		errs = append(errs, errors.New("sink: at least one is required"))
	}
	if o.Groups == nil {
		errs = append(errs, errors.New("target: no task group client"))
	}
	if o.Processor == "" {
		errs = append(errs, errors.New("task.processor: required"))
	}
	if o.StateDir == "" {
		errs = append(errs, errors.New("target.state_dir: required"))
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.ChunkSize < 1 || o.ChunkSize > api.MaxRunsPerAdd {
		errs = append(errs, fmt.Errorf("chunk size: must be 1..%d, not %d", api.MaxRunsPerAdd, o.ChunkSize))
	}
	if o.AddsPerMinute == 0 {
		o.AddsPerMinute = DefaultAddsPerMinute
	}
	if o.AddsPerMinute < 0 {
		errs = append(errs, fmt.Errorf("target.adds_per_minute: must be positive, not %v", o.AddsPerMinute))
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = DefaultProgressEvery
	}
	if o.Limit < 0 {
		errs = append(errs, fmt.Errorf("limit: must not be negative, not %d", o.Limit))
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Target == "" {
		o.Target = "default"
	}
	return o, errors.Join(errs...)
}

// Summary is what a pipeline run did and where its rows stand.
type Summary struct {
	// GroupID is the task group holding the pipeline's runs.
	GroupID string `json:"group_id"`
	// SpecHash identifies the task spec the rows ran with.
	SpecHash string `json:"spec_hash"`
	// Rows counts the source rows read (after --limit).
	Rows int64 `json:"rows"`
	// Submitted counts runs added by this run; Reattached rows whose
	// active runs from an earlier run were followed instead; Skipped rows
	// completed earlier with the same input and spec.
	Submitted  int64 `json:"submitted"`
	Reattached int64 `json:"reattached"`
	Skipped    int64 `json:"skipped"`
	// Adopted counts runs found in the group after a crash and matched
	// back to their rows.
	Adopted int64 `json:"adopted"`
	// Duplicates counts source rows whose key an earlier row already had;
	// they were not submitted (the first row with the key was).
	Duplicates int64 `json:"duplicates"`
	// Statuses counts the rows read by this run by their status now:
	// completed, failed, cancelled, invalid_input, invalid_output and,
	// with NoWait, submitted (still running).
	Statuses map[string]int64 `json:"statuses"`
	// Failed counts rows that did not complete (failed, cancelled,
	// invalid_input, invalid_output).
	Failed int64 `json:"failed"`
	// Pending counts rows still running (only with NoWait).
	Pending int64 `json:"pending"`
	// Waited is false when NoWait returned before the results.
	Waited bool `json:"waited"`
	// Elapsed is the wall time of the run.
	Elapsed time.Duration `json:"elapsed_ns"`
}

// failedStatuses are the row statuses that count as failures.
var failedStatuses = []string{
	string(api.StatusFailed), string(api.StatusCancelled), StatusInvalidInput, StatusInvalidOutput,
}

// StatusInvalidOutput is the status of a row whose run completed with an
// output that does not fit the table's typed columns; the error column says
// why. It counts as failed and is submitted again with RetryFailed.
const StatusInvalidOutput = "invalid_output"
