package processors

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
)

// recorder is the Reporter of these tests: it keeps every outcome and
// progress message and signals when the expected number of runs completed.
type recorder struct {
	mu       sync.Mutex
	outcomes map[string]engine.Outcome
	dups     int
	progress []string
	want     int
	done     chan struct{}
}

// newRecorder expects want completions.
func newRecorder(want int) *recorder {
	return &recorder{outcomes: map[string]engine.Outcome{}, want: want, done: make(chan struct{})}
}

// Complete implements engine.Reporter.
func (r *recorder) Complete(runID string, o engine.Outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.outcomes[runID]; ok {
		r.dups++
		return
	}
	r.outcomes[runID] = o
	if len(r.outcomes) == r.want {
		close(r.done)
	}
}

// Progress implements engine.Reporter.
func (r *recorder) Progress(runID, kind, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress = append(r.progress, runID+" "+kind+" "+message)
}

// Checkpoint implements engine.Reporter.
func (r *recorder) Checkpoint(ctx context.Context, runID string, state json.RawMessage) error {
	return nil
}

// wait blocks until all expected runs completed, failing the test after d.
func (r *recorder) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(d):
		r.mu.Lock()
		n := len(r.outcomes)
		r.mu.Unlock()
		t.Fatalf("%d of %d runs completed within %s", n, r.want, d)
	}
}

// get returns the outcome of a run.
func (r *recorder) get(t *testing.T, runID string) engine.Outcome {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.outcomes[runID]
	if !ok {
		t.Fatalf("run %s not completed", runID)
	}
	return o
}

// jsonJob makes a job with a json output schema.
func jsonJob(runID, input, schema string) engine.Job {
	return engine.Job{
		RunID:   runID,
		Attempt: 1,
		Input: api.TaskRunInput{
			Input:     json.RawMessage(input),
			Processor: "test",
			TaskSpec: &api.TaskSpec{OutputSchema: api.Schema{
				Type: api.SchemaJSON, JSONSchema: json.RawMessage(schema),
			}},
		},
	}
}
