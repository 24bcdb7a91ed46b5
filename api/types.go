// Package api holds the wire types of the Task and Task Group API, as
// Parallel publishes it and taskpipe serves it, and a Go client for both.
//
// Every type here marshals to exactly the JSON the reference describes:
// required keys are always present (with null where empty) so that strict
// SDK clients accept them.
package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// RunStatus is the lifecycle state of a task run.
type RunStatus string

// The run statuses of the Task API.
const (
	StatusQueued         RunStatus = "queued"
	StatusActionRequired RunStatus = "action_required"
	StatusRunning        RunStatus = "running"
	StatusCompleted      RunStatus = "completed"
	StatusFailed         RunStatus = "failed"
	StatusCancelling     RunStatus = "cancelling"
	StatusCancelled      RunStatus = "cancelled"
)

// AllStatuses lists every run status in lifecycle order.
var AllStatuses = []RunStatus{
	StatusQueued, StatusActionRequired, StatusRunning, StatusCompleted,
	StatusFailed, StatusCancelling, StatusCancelled,
}

// Valid reports whether s is one of the seven statuses of the API.
func (s RunStatus) Valid() bool {
	for _, v := range AllStatuses {
		if s == v {
			return true
		}
	}
	return false
}

// Active reports whether a run in this status may still change: queued,
// running or cancelling, as the API defines is_active.
func (s RunStatus) Active() bool {
	return s == StatusQueued || s == StatusRunning || s == StatusCancelling
}

// Terminal reports whether a run in this status will never change again.
func (s RunStatus) Terminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled
}

// Metadata is the user's key/value map on runs and groups. Values are
// strings, numbers or booleans.
type Metadata map[string]any

// TaskRunInput is the request to create one run, the element of an add-runs
// call and the reply of the run input endpoint.
type TaskRunInput struct {
	Input                 json.RawMessage `json:"input"`
	Processor             string          `json:"processor"`
	Metadata              Metadata        `json:"metadata,omitempty"`
	SourcePolicy          *SourcePolicy   `json:"source_policy,omitempty"`
	AdvancedSettings      json.RawMessage `json:"advanced_settings,omitempty"`
	TaskSpec              *TaskSpec       `json:"task_spec,omitempty"`
	PreviousInteractionID *string         `json:"previous_interaction_id,omitempty"`
	McpServers            json.RawMessage `json:"mcp_servers,omitempty"`
	EnableEvents          *bool           `json:"enable_events,omitempty"`
	Webhook               *Webhook        `json:"webhook,omitempty"`
	MemoryScopeKey        *string         `json:"memory_scope_key,omitempty"`
}

// SourcePolicy limits the web sources a processor may use.
type SourcePolicy struct {
	IncludeDomains []string `json:"include_domains,omitempty"`
	ExcludeDomains []string `json:"exclude_domains,omitempty"`
	AfterDate      *string  `json:"after_date,omitempty"`
}

// Webhook asks for a POST to URL when the run reaches a terminal state.
type Webhook struct {
	URL        string   `json:"url"`
	EventTypes []string `json:"event_types,omitempty"`
}

// TaskSpec describes the input and output of a task.
type TaskSpec struct {
	OutputSchema Schema  `json:"output_schema"`
	InputSchema  *Schema `json:"input_schema,omitempty"`
}

// Schema kinds of a task spec.
const (
	SchemaJSON = "json"
	SchemaText = "text"
	SchemaAuto = "auto"
)

// Schema is the union of JsonSchema, TextSchema, AutoSchema and a bare
// string (a text schema whose description is the string).
type Schema struct {
	Type        string          `json:"type"`
	JSONSchema  json.RawMessage `json:"json_schema,omitempty"`
	Description *string         `json:"description,omitempty"`
}

// UnmarshalJSON decodes any of the four forms: a string is text; an object
// uses its type when present, else json when json_schema is present, else
// text.
func (s *Schema) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var d string
		if err := json.Unmarshal(b, &d); err != nil {
			return err
		}
		*s = Schema{Type: SchemaText, Description: &d}
		return nil
	}
	type plain Schema
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	switch {
	case p.Type != "":
	case len(p.JSONSchema) > 0:
		p.Type = SchemaJSON
	default:
		p.Type = SchemaText
	}
	if p.Type != SchemaJSON && p.Type != SchemaText && p.Type != SchemaAuto {
		return fmt.Errorf("type must be json, text or auto, not %q", p.Type)
	}
	*s = Schema(p)
	return nil
}

// TaskRun is the status object of a run.
type TaskRun struct {
	RunID         string       `json:"run_id"`
	InteractionID string       `json:"interaction_id"`
	Status        RunStatus    `json:"status"`
	IsActive      bool         `json:"is_active"`
	Warnings      []Warning    `json:"warnings"`
	Error         *ErrorObject `json:"error"`
	Processor     string       `json:"processor"`
	Metadata      Metadata     `json:"metadata"`
	TaskGroupID   *string      `json:"taskgroup_id"`
	CreatedAt     *string      `json:"created_at"`
	ModifiedAt    *string      `json:"modified_at"`
	// Cached, a taskpipe extension, marks a run completed from the result
	// of an identical earlier run without executing it.
	Cached bool `json:"cached,omitempty"`
}

// Warning is a non-fatal problem with a run's spec or input.
type Warning struct {
	Type    string         `json:"type"`
	Message string         `json:"message"`
	Detail  map[string]any `json:"detail"`
}

// Warning types of the API.
const (
	WarningSpec  = "spec_validation_warning"
	WarningInput = "input_validation_warning"
	WarningOther = "warning"
)

// Output kinds of a run result.
const (
	OutputJSON = "json"
	OutputText = "text"
)

// Output is a completed run's result: TaskRunTextOutput when Type is text
// (Content is a JSON string), TaskRunJsonOutput when json (Content is an
// object).
type Output struct {
	Type         string          `json:"type"`
	Content      json.RawMessage `json:"content"`
	Basis        []FieldBasis    `json:"basis"`
	McpToolCalls json.RawMessage `json:"mcp_tool_calls"`
	BetaFields   json.RawMessage `json:"beta_fields"`
	OutputSchema json.RawMessage `json:"output_schema,omitempty"`
}

// FieldBasis explains one output field: the reasoning, the citations and a
// confidence level.
type FieldBasis struct {
	Field      string     `json:"field"`
	Citations  []Citation `json:"citations"`
	Reasoning  string     `json:"reasoning"`
	Confidence *string    `json:"confidence"`
}

// Citation is one source behind a field.
type Citation struct {
	URL      string   `json:"url"`
	Title    *string  `json:"title"`
	Excerpts []string `json:"excerpts"`
}

// TaskRunResult is the reply of the blocking result endpoint.
type TaskRunResult struct {
	Run    TaskRun `json:"run"`
	Output Output  `json:"output"`
}

// MetadataMaxCost is the group metadata key with which a client caps the
// cost of a task group, in US dollars (a taskpipe extension; other servers
// keep it as plain metadata).
const MetadataMaxCost = "max_cost_usd"

// CreateTaskGroupRequest is the body of the create-group call.
type CreateTaskGroupRequest struct {
	Metadata Metadata `json:"metadata,omitempty"`
}

// TaskGroup is a group and its status summary.
type TaskGroup struct {
	TaskGroupID string          `json:"taskgroup_id"`
	Status      TaskGroupStatus `json:"status"`
	CreatedAt   *string         `json:"created_at"`
	Metadata    Metadata        `json:"metadata"`
}

// TaskGroupStatus summarises the runs of a group.
type TaskGroupStatus struct {
	NumTaskRuns         int64               `json:"num_task_runs"`
	TaskRunStatusCounts map[RunStatus]int64 `json:"task_run_status_counts"`
	IsActive            bool                `json:"is_active"`
	StatusMessage       *string             `json:"status_message"`
	ModifiedAt          *string             `json:"modified_at"`
}

// TaskGroupRunRequest is the body of the add-runs call.
type TaskGroupRunRequest struct {
	Inputs          []TaskRunInput `json:"inputs"`
	DefaultTaskSpec *TaskSpec      `json:"default_task_spec,omitempty"`
}

// MaxRunsPerAdd is the most inputs one add-runs call may carry.
const MaxRunsPerAdd = 1000

// TaskGroupRunResponse is the reply of the add-runs call. The cursors are the
// last positions of the runs and events streams before this batch, null for
// a group's first batch.
type TaskGroupRunResponse struct {
	Status      TaskGroupStatus `json:"status"`
	RunIDs      []string        `json:"run_ids"`
	RunCursor   *string         `json:"run_cursor"`
	EventCursor *string         `json:"event_cursor"`
}

// ErrorObject is the error of a failed run or of a failed request.
type ErrorObject struct {
	RefID   string         `json:"ref_id"`
	Message string         `json:"message"`
	Detail  map[string]any `json:"detail"`
}

// ErrorResponse is the body of every non-2xx reply.
type ErrorResponse struct {
	Type  string      `json:"type"`
	Error ErrorObject `json:"error"`
}

// Timestamp formats t as the API does: RFC 3339 in UTC with microseconds.
func Timestamp(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000Z")
}

// TimestampPtr is Timestamp for the nullable timestamp fields; the zero time
// becomes null.
func TimestampPtr(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := Timestamp(t)
	return &s
}
