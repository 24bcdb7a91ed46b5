package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
	"github.com/taskpipe/taskpipe/processors"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

// stack is a Server over a real engine on SQLite in a temp dir. Its
// processors are the embedded synthetic one plus two test backends:
// "hold", which takes runs and completes them only when released, and
// "failing", the synthetic kind with every input failing.
type stack struct {
	srv   *Server
	ts    *httptest.Server
	eng   *engine.Engine
	store *sqlite.Store
	hold  *holdProcessor
	logs  *syncBuffer
	// spy records the timeouts the result endpoint passed to the engine.
	spy *resultSpy
}

// newStack starts a stack; opts may adjust the server options.
func newStack(t *testing.T, opts ...func(*Options)) *stack {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "taskpipe.db"))
	if err != nil {
		t.Fatal(err)
	}
	syn, err := processors.NewSynthetic(processors.SyntheticOptions{})
	if err != nil {
		t.Fatal(err)
	}
	failing, err := processors.NewSynthetic(processors.SyntheticOptions{FailureRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	hold := &holdProcessor{synthetic: syn, claimed: make(chan struct{}, 1)}
	backends := processors.Default(nil)
	backends["hold"] = engine.Backend{Processor: hold, Concurrency: 1, MaxAttempts: 1}
	backends["failing"] = engine.Backend{Processor: failing, MaxAttempts: 1}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	eng, err := engine.New(engine.Options{Store: st, Backends: backends, Node: "test",
		PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	spy := &resultSpy{Engine: eng}
	o := Options{Service: spy, WithOwner: engine.WithOwner, Logger: log}
	for _, f := range opts {
		f(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	s := &stack{srv: srv, ts: ts, eng: eng, store: st, hold: hold, logs: logs, spy: spy}
	t.Cleanup(func() {
		srv.CloseStreams()
		ts.Close()
		hold.release()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		// A test may have closed the store under the engine; Stop then
		// reports the outcomes it could not write, which is expected.
		_ = eng.Stop(sctx)
		_ = st.Close()
	})
	return s
}

// createGroup creates a group as owner's key and returns its id.
func (s *stack) createGroup(t *testing.T, key string) string {
	t.Helper()
	code, _, b := do(t, "POST", s.ts.URL+"/v1/tasks/groups", key, `{}`)
	if code != http.StatusOK {
		t.Fatalf("create group: %d %s", code, b)
	}
	var g api.TaskGroup
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g.TaskGroupID
}

// addRuns adds n runs of processor to the group and returns their ids.
func (s *stack) addRuns(t *testing.T, key, groupID, processor string, n int) []string {
	t.Helper()
	inputs := make([]string, n)
	for i := range inputs {
		inputs[i] = fmt.Sprintf(`{"input":"row %d","processor":%q,"metadata":{"row":%d}}`,
			i, processor, i)
	}
	code, _, b := do(t, "POST", s.ts.URL+"/v1/tasks/groups/"+groupID+"/runs", key,
		`{"inputs":[`+strings.Join(inputs, ",")+`]}`)
	if code != http.StatusOK {
		t.Fatalf("add runs: %d %s", code, b)
	}
	var resp api.TaskGroupRunResponse
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.RunIDs) != n {
		t.Fatalf("add runs: %d ids for %d inputs", len(resp.RunIDs), n)
	}
	return resp.RunIDs
}

// group reads a group's status as the dev owner.
func (s *stack) group(t *testing.T, groupID string) api.TaskGroup {
	t.Helper()
	code, _, b := do(t, "GET", s.ts.URL+"/v1/tasks/groups/"+groupID, "k", "")
	if code != http.StatusOK {
		t.Fatalf("get group: %d %s", code, b)
	}
	var g api.TaskGroup
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

// waitFor polls cond until it holds or ten seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// metricValue returns the value of one sample line of /metrics, or "".
func (s *stack) metricValue(t *testing.T, sample string) string {
	t.Helper()
	_, _, b := do(t, "GET", s.ts.URL+"/metrics", "", "")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return v
		}
	}
	return ""
}

// holdProcessor is a test backend that keeps every job it is given until
// release is called, then completes them (and any later job at once) with
// the synthetic processor's output. Each job first reports a "plan"
// progress message.
type holdProcessor struct {
	synthetic *processors.Synthetic
	claimed   chan struct{} // signalled when jobs arrive

	mu       sync.Mutex
	jobs     []engine.Job
	reporter engine.Reporter
	released bool
}

var _ engine.Processor = (*holdProcessor)(nil)

// Execute implements engine.Processor.
func (h *holdProcessor) Execute(ctx context.Context, jobs []engine.Job, r engine.Reporter) {
	for i := range jobs {
		r.Progress(jobs[i].RunID, "plan", "holding "+jobs[i].RunID)
	}
	h.mu.Lock()
	h.reporter = r
	if h.released {
		h.mu.Unlock()
		for i := range jobs {
			r.Complete(jobs[i].RunID, h.synthetic.Outcome(&jobs[i]))
		}
		return
	}
	h.jobs = append(h.jobs, jobs...)
	h.mu.Unlock()
	select {
	case h.claimed <- struct{}{}:
	default:
	}
}

// held returns how many jobs wait for release.
func (h *holdProcessor) held() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.jobs)
}

// release completes the held jobs and every later one.
func (h *holdProcessor) release() {
	h.mu.Lock()
	jobs, r := h.jobs, h.reporter
	h.jobs, h.released = nil, true
	h.mu.Unlock()
	for i := range jobs {
		r.Complete(jobs[i].RunID, h.synthetic.Outcome(&jobs[i]))
	}
}

// resultSpy is the real engine with one observation added: the timeout
// each result call asked for, which no reply shows.
type resultSpy struct {
	*engine.Engine
	mu       sync.Mutex
	timeouts []time.Duration
}

// GetRunResult records the timeout and calls the engine.
func (s *resultSpy) GetRunResult(ctx context.Context, runID string, timeout time.Duration) (api.TaskRunResult, error) {
	s.mu.Lock()
	s.timeouts = append(s.timeouts, timeout)
	s.mu.Unlock()
	return s.Engine.GetRunResult(ctx, runID, timeout)
}

// lastTimeout returns the timeout of the latest result call.
func (s *resultSpy) lastTimeout() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.timeouts) == 0 {
		return -1
	}
	return s.timeouts[len(s.timeouts)-1]
}

// syncBuffer is a bytes.Buffer safe for the logger and the test at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written.
func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var _ io.Writer = (*syncBuffer)(nil)
