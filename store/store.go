// Package store defines the engine's durable state: task groups, runs, the
// per-group event log and the webhook outbox. The Store interface is
// implemented by store/sqlite (the embedded default) and is written so that
// a PostgreSQL store shared by several engine nodes can implement it too:
// nothing here assumes a single process. store/storetest is the suite every
// implementation passes.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/taskpipe/taskpipe/api"
)

// ErrNotFound is returned when a group or run does not exist.
var ErrNotFound = errors.New("not found")

// ErrBudget is returned by AddRuns when a batch would take a group's cost
// past its MaxCost.
var ErrBudget = errors.New("group budget exceeded")

// Group is a task group and its running summary. Counts and cursors are
// maintained by the store in the same transaction as the changes they count.
type Group struct {
	ID         string
	Owner      string
	Metadata   api.Metadata
	CreatedAt  time.Time
	ModifiedAt time.Time
	// Counts holds the number of runs in each status; statuses with no runs
	// are absent.
	Counts map[api.RunStatus]int64
	// NumRuns is the total number of runs in the group.
	NumRuns int64
	// LastRunSeq is the sequence number of the newest run (0 when empty).
	LastRunSeq int64
	// LastEventSeq is the sequence number of the newest event (0 when none).
	LastEventSeq int64
	// Cost is the sum of the Cost of the group's runs, in US dollars.
	Cost float64
	// MaxCost, when positive, is the most Cost may reach.
	MaxCost float64
}

// Active reports whether any run of the group may still change.
func (g Group) Active() bool {
	for s, n := range g.Counts {
		if n > 0 && s.Active() {
			return true
		}
	}
	return false
}

// Run is one task run as stored.
type Run struct {
	ID      string
	GroupID string // empty for a run outside any group
	// Seq is the run's position in its group, from 1; 0 outside a group.
	Seq       int64
	Owner     string
	Processor string
	Status    api.RunStatus
	// Input is the submitted api.TaskRunInput as JSON, without task_spec.
	Input json.RawMessage
	// SpecHash identifies the resolved task spec; Spec holds its JSON. Many
	// runs share one stored spec.
	SpecHash string
	Spec     json.RawMessage
	Warnings json.RawMessage // []api.Warning or nil
	Error    json.RawMessage // api.ErrorObject or nil
	Output   json.RawMessage // api.Output or nil
	Usage    json.RawMessage // processor usage or nil
	Cached   bool
	// Cost is the run's price, added to its group's Cost.
	Cost float64
	// CacheKey identifies identical requests (processor, input, spec) for
	// the result cache; empty when the run may not be served from it.
	CacheKey string
	// Attempt counts executions, starting at 0 before the first claim.
	Attempt    int
	Checkpoint json.RawMessage
	CreatedAt  time.Time
	ModifiedAt time.Time
	FinishedAt time.Time // zero until terminal
	// NotBefore delays the next claim (retry backoff); zero means now.
	NotBefore time.Time
	// LeaseOwner and LeaseUntil are set while a node executes the run.
	LeaseOwner string
	LeaseUntil time.Time
}

// EventKind says what an event log entry records.
type EventKind string

// Kinds of events in a group's log.
const (
	// EventRunState: a run reached a terminal status.
	EventRunState EventKind = "task_run.state"
	// EventGroupStatus: the group's status summary changed.
	EventGroupStatus EventKind = "task_group_status"
)

// Event is one entry of a group's durable event log. Seq is monotonic per
// group without gaps.
type Event struct {
	GroupID string
	Seq     int64
	Kind    EventKind
	// RunID and Run are set for EventRunState (Run as it is now, which for
	// a terminal run is as it was then; Store.ListEvents says which of its
	// fields a read log fills).
	RunID string
	Run   *Run
	// Status is the group summary at the time, for EventGroupStatus.
	Status *GroupSnapshot
	At     time.Time
}

// GroupSnapshot is a group's status summary at one moment.
type GroupSnapshot struct {
	NumRuns    int64                   `json:"num_runs"`
	Counts     map[api.RunStatus]int64 `json:"counts"`
	ModifiedAt time.Time               `json:"modified_at"`
}

// AddResult is what AddRuns reports.
type AddResult struct {
	// PrevRunSeq and PrevEventSeq are the group's cursors before the batch.
	PrevRunSeq   int64
	PrevEventSeq int64
	// Group is the group after the batch (zero for runs outside a group).
	Group Group
	// Events are the events the batch appended (a group status event).
	Events []Event
}

// Claim asks for queued runs of some processors.
type Claim struct {
	Processor  string
	Node       string
	Limit      int
	Now        time.Time
	LeaseUntil time.Time
}

// Finish is the terminal outcome of one run.
type Finish struct {
	RunID  string
	Node   string // the node holding the lease; empty to finish unleased runs
	Status api.RunStatus
	Output json.RawMessage
	Error  json.RawMessage
	Usage  json.RawMessage
	Cached bool
	At     time.Time
	// Webhook, when set, is queued in the outbox in the same transaction.
	Webhook *Delivery
}

// Retry puts a running run back in the queue after a transient failure.
type Retry struct {
	RunID     string
	Node      string
	NotBefore time.Time
	Error     json.RawMessage // the last error, kept for the record
	At        time.Time
}

// FinishResult is what FinishRuns reports.
type FinishResult struct {
	// Applied lists the runs whose status changed, as stored afterwards.
	Applied []Run
	// Events are the events appended, in order (run states, then one group
	// status event per group touched).
	Events []Event
}

// Delivery is one webhook message in the outbox.
type Delivery struct {
	ID        string
	RunID     string
	URL       string
	Payload   json.RawMessage
	Attempts  int
	NextAt    time.Time
	LastError string
}

// Store is the engine's durable state. All methods are safe for concurrent
// use by several goroutines and, for shared backends, several processes.
type Store interface {
	// CreateGroup stores a new, empty group.
	CreateGroup(ctx context.Context, g Group) error
	// GetGroup returns a group with its counts, or ErrNotFound.
	GetGroup(ctx context.Context, id string) (Group, error)
	// AddRuns stores runs (all or none) in status queued. Runs with a
	// GroupID get consecutive sequence numbers in input order and one
	// group status event is appended. Specs maps SpecHash to spec JSON for
	// the specs not stored yet (storing one twice is harmless). The batch's
	// Cost is added to the group's; when that would pass a positive
	// MaxCost, nothing is stored and the error wraps ErrBudget.
	//
	// A run given with Status running and a LeaseOwner is stored already
	// claimed (Attempt 1, leased until LeaseUntil), as if ClaimRuns had
	// returned it: the engine claims runs for free processor slots at
	// insert time instead of paying for a second write.
	AddRuns(ctx context.Context, groupID string, runs []Run, specs map[string]json.RawMessage) (AddResult, error)
	// GetRun returns a run with its spec, or ErrNotFound.
	GetRun(ctx context.Context, id string) (Run, error)
	// ListRuns returns up to limit runs of a group with Seq > afterSeq in
	// Seq order, optionally only those in status (empty for all).
	ListRuns(ctx context.Context, groupID string, afterSeq int64, status api.RunStatus, limit int) ([]Run, error)
	// ListEvents returns up to limit events of a group with Seq > afterSeq
	// in order, with Run filled for run state events with what an event
	// reports: ID, GroupID, Seq, Processor, Status, Warnings, Error,
	// Cached, Attempt and the times, and an Input reduced to the submitted
	// input's metadata ({"metadata":{...}}, nil when it had none). Output,
	// Usage, Checkpoint, Spec and the other fields may be left empty: read
	// the run itself for them.
	ListEvents(ctx context.Context, groupID string, afterSeq int64, limit int) ([]Event, error)
	// ClaimRuns moves up to c.Limit queued runs of c.Processor whose
	// NotBefore has passed to running, oldest first, leased to c.Node until
	// c.LeaseUntil, with Attempt incremented, and returns them with specs.
	ClaimRuns(ctx context.Context, c Claim) ([]Run, error)
	// ExtendLeases moves the lease of runs still held by node to until.
	ExtendLeases(ctx context.Context, node string, runIDs []string, until time.Time) error
	// FinishRuns records terminal outcomes in one transaction. A finish is
	// applied only while the run is active and, when Node is set, still
	// leased to that node; others are skipped (never overwritten).
	FinishRuns(ctx context.Context, fs []Finish) (FinishResult, error)
	// RetryRuns puts running runs still leased to their node back to
	// queued, not to be claimed before NotBefore.
	RetryRuns(ctx context.Context, rs []Retry) error
	// Recover requeues runs left running by node (after its restart) and
	// runs of any node whose lease expired before now; runs left
	// cancelling are cancelled. It returns the number of runs touched and
	// the events appended.
	Recover(ctx context.Context, node string, now time.Time) (int64, []Event, error)
	// CachedOutput returns the output of the newest run of processor with
	// cacheKey that completed at or after since; ok is false when there is
	// none.
	CachedOutput(ctx context.Context, processor, cacheKey string, since time.Time) (out json.RawMessage, ok bool, err error)
	// QueueDepth counts queued runs by processor, across all groups.
	QueueDepth(ctx context.Context) (map[string]int64, error)
	// SaveCheckpoint stores processor state for a run.
	SaveCheckpoint(ctx context.Context, runID string, state json.RawMessage) error
	// CancelRuns cancels the given runs (or every active run of groupID
	// when runIDs is empty): queued runs become cancelled, running runs
	// cancelling. It returns the changed runs and the events appended.
	CancelRuns(ctx context.Context, groupID string, runIDs []string, at time.Time) (FinishResult, error)
	// DueDeliveries returns up to limit webhook deliveries due at now.
	DueDeliveries(ctx context.Context, now time.Time, limit int) ([]Delivery, error)
	// UpdateDelivery records an attempt: delivered removes the delivery
	// from the queue, otherwise it is due again at d.NextAt.
	UpdateDelivery(ctx context.Context, d Delivery, delivered bool) error
	// Close releases the store.
	Close() error
}
