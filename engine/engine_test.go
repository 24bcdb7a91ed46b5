package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
	"github.com/taskpipe/taskpipe/processors"
	"github.com/taskpipe/taskpipe/store"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

// companySpec is a small JSON task spec used across the tests.
var companySpec = &api.TaskSpec{
	OutputSchema: api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(`{
		"type": "object",
		"properties": {
			"summary": {"type": "string", "description": "one line"},
			"employees": {"type": "integer"},
			"public": {"type": "boolean"}
		},
		"required": ["summary", "employees", "public"],
		"additionalProperties": false
	}`)},
}

// funcProcessor runs fn for each job on its own goroutine: a backend that
// works one run at a time.
type funcProcessor struct {
	fn    func(ctx context.Context, j engine.Job) engine.Outcome
	calls sync.Map // run id -> *atomic.Int64
}

func (p *funcProcessor) Execute(ctx context.Context, jobs []engine.Job, r engine.Reporter) {
	for _, j := range jobs {
		n, _ := p.calls.LoadOrStore(j.RunID, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		go func() {
			o := p.fn(ctx, j)
			if ctx.Err() == nil {
				r.Complete(j.RunID, o)
			}
		}()
	}
}

func (p *funcProcessor) executions(runID string) int64 {
	n, ok := p.calls.Load(runID)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

// jsonOutput is a valid output for companySpec.
func jsonOutput(summary string) *api.Output {
	return &api.Output{
		Type:    api.OutputJSON,
		Content: json.RawMessage(fmt.Sprintf(`{"summary":%q,"employees":7,"public":true}`, summary)),
		Basis:   []api.FieldBasis{{Field: "summary", Reasoning: "test"}},
	}
}

type harness struct {
	t     *testing.T
	path  string
	store store.Store
	eng   *engine.Engine
}

// newHarness starts an engine on a fresh SQLite store with the given
// backends (plus synthetic).
func newHarness(t *testing.T, backends map[string]engine.Backend) *harness {
	t.Helper()
	h := &harness{t: t, path: filepath.Join(t.TempDir(), "engine.db")}
	h.start(backends)
	t.Cleanup(func() { h.stop() })
	return h
}

func (h *harness) start(backends map[string]engine.Backend) {
	h.t.Helper()
	st, err := sqlite.Open(context.Background(), h.path)
	if err != nil {
		h.t.Fatalf("open store: %v", err)
	}
	all := processors.Default(nil)
	for k, v := range backends {
		all[k] = v
	}
	eng, err := engine.New(engine.Options{Store: st, Backends: all, Node: "test-node", PollInterval: 50 * time.Millisecond})
	if err != nil {
		h.t.Fatalf("new engine: %v", err)
	}
	if err := eng.Start(context.Background()); err != nil {
		h.t.Fatalf("start engine: %v", err)
	}
	h.store, h.eng = st, eng
}

func (h *harness) stop() {
	if h.eng == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.eng.Stop(ctx); err != nil {
		h.t.Errorf("stop engine: %v", err)
	}
	if err := h.store.Close(); err != nil {
		h.t.Errorf("close store: %v", err)
	}
	h.eng = nil
}

// failedRun creates a run of processor, checks that its result is refused
// as a failed run's, and returns the run.
func (h *harness) failedRun(processor string) api.TaskRun {
	h.t.Helper()
	ctx := context.Background()
	run, err := h.eng.CreateRun(ctx, api.TaskRunInput{Input: json.RawMessage(`"x"`), Processor: processor})
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.eng.GetRunResult(ctx, run.RunID, 20*time.Second); !errors.Is(err, api.ErrNotFound) {
		h.t.Fatalf("result err = %v, want not found for a failed run", err)
	}
	got, err := h.eng.GetRun(ctx, run.RunID)
	if err != nil {
		h.t.Fatal(err)
	}
	return got
}

func inputs(n int, processor string) []api.TaskRunInput {
	in := make([]api.TaskRunInput, n)
	for i := range in {
		in[i] = api.TaskRunInput{
			Input:     json.RawMessage(fmt.Sprintf(`{"company":"Company %d"}`, i)),
			Processor: processor,
			Metadata:  api.Metadata{"row": float64(i)},
		}
	}
	return in
}

// waitGroup follows the group's events until it is inactive and returns
// the run-state events seen.
func waitGroup(t *testing.T, ctx context.Context, eng *engine.Engine, groupID string) []*api.TaskRunEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var states []*api.TaskRunEvent
	err := eng.GroupEvents(ctx, groupID, api.GroupEventsQuery{}, func(ev api.Event) error {
		if rs, ok := ev.(*api.TaskRunEvent); ok {
			states = append(states, rs)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("follow group events: %v", err)
	}
	g, err := eng.GetTaskGroup(ctx, groupID)
	if err != nil {
		t.Fatalf("get group: %v", err)
	}
	if g.Status.IsActive {
		t.Fatalf("group still active after its events stream ended: %+v", g.Status)
	}
	return states
}

func TestEngine_GroupLifecycle(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ctx := context.Background()

	g, err := h.eng.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{Metadata: api.Metadata{"batch": "b1"}})
	if err != nil {
		t.Fatalf("create group: %v", err)
	}
	first, err := h.eng.AddRuns(ctx, g.TaskGroupID, api.TaskGroupRunRequest{Inputs: inputs(300, "synthetic"), DefaultTaskSpec: companySpec})
	if err != nil {
		t.Fatalf("add runs: %v", err)
	}
	if len(first.RunIDs) != 300 || first.RunCursor != nil || first.EventCursor != nil {
		t.Fatalf("first batch: %d ids, run cursor %v, event cursor %v; want 300, nil, nil",
			len(first.RunIDs), first.RunCursor, first.EventCursor)
	}
	second, err := h.eng.AddRuns(ctx, g.TaskGroupID, api.TaskGroupRunRequest{Inputs: inputs(200, "synthetic"), DefaultTaskSpec: companySpec})
	if err != nil {
		t.Fatalf("add second batch: %v", err)
	}
	if second.RunCursor == nil || *second.RunCursor != "300" {
		t.Fatalf("second batch run cursor = %v, want 300", second.RunCursor)
	}

	states := waitGroup(t, ctx, h.eng, g.TaskGroupID)
	if len(states) != 500 {
		t.Fatalf("run state events = %d, want 500", len(states))
	}
	got, err := h.eng.GetTaskGroup(ctx, g.TaskGroupID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.NumTaskRuns != 500 || got.Status.TaskRunStatusCounts[api.StatusCompleted] != 500 {
		t.Fatalf("status = %+v, want 500 completed", got.Status)
	}
	if got.Metadata["batch"] != "b1" {
		t.Fatalf("metadata = %v", got.Metadata)
	}

	// The runs stream resumes after the second batch's cursor and carries
	// inputs and schema-valid outputs.
	var seen []string
	err = h.eng.GroupRuns(ctx, g.TaskGroupID, api.GroupRunsQuery{
		LastEventID: *second.RunCursor, IncludeInput: true, IncludeOutput: true,
	}, func(ev *api.TaskRunEvent) error {
		if ev.Output == nil || ev.Output.Type != api.OutputJSON || ev.Input == nil {
			return fmt.Errorf("run %s: missing output or input", ev.Run.RunID)
		}
		var content map[string]any
		if err := json.Unmarshal(ev.Output.Content, &content); err != nil {
			return err
		}
		if _, ok := content["employees"].(float64); !ok {
			return fmt.Errorf("run %s: employees = %v", ev.Run.RunID, content["employees"])
		}
		seen = append(seen, ev.Run.RunID)
		return nil
	})
	if err != nil {
		t.Fatalf("stream runs: %v", err)
	}
	if len(seen) != 200 || seen[0] != second.RunIDs[0] || seen[199] != second.RunIDs[199] {
		t.Fatalf("resumed stream gave %d runs, want the 200 of the second batch in order", len(seen))
	}
}

func TestEngine_AddRunsRejectsBadBatchWhole(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ctx := context.Background()
	g, err := h.eng.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{})
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		req   func() api.TaskGroupRunRequest
		kind  error
		field string
	}{
		{"unknown processor", func() api.TaskGroupRunRequest {
			in := inputs(5, "synthetic")
			in[3].Processor = "nope"
			return api.TaskGroupRunRequest{Inputs: in}
		}, api.ErrForbidden, "inputs[3].processor"},
		{"null input", func() api.TaskGroupRunRequest {
			in := inputs(5, "synthetic")
			in[2].Input = json.RawMessage(`null`)
			return api.TaskGroupRunRequest{Inputs: in}
		}, api.ErrInvalid, "inputs[2].input"},
		{"too many", func() api.TaskGroupRunRequest {
			return api.TaskGroupRunRequest{Inputs: inputs(1001, "synthetic")}
		}, api.ErrInvalid, "inputs:"},
		{"bad spec", func() api.TaskGroupRunRequest {
			return api.TaskGroupRunRequest{Inputs: inputs(2, "synthetic"), DefaultTaskSpec: &api.TaskSpec{
				OutputSchema: api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(`{"type":"string"}`)},
			}}
		}, api.ErrInvalid, "default_task_spec"},
		{"metadata type", func() api.TaskGroupRunRequest {
			in := inputs(2, "synthetic")
			in[1].Metadata = api.Metadata{"k": []any{1}}
			return api.TaskGroupRunRequest{Inputs: in}
		}, api.ErrInvalid, "inputs[1].metadata.k"},
	}
	for _, c := range cases {
		_, err := h.eng.AddRuns(ctx, g.TaskGroupID, c.req())
		if !errors.Is(err, c.kind) {
			t.Errorf("%s: err = %v, want kind %v", c.name, err, c.kind)
			continue
		}
		if got := err.Error(); len(got) < len(c.field) || got[:len(c.field)] != c.field {
			t.Errorf("%s: message %q does not start with %q", c.name, got, c.field)
		}
	}
	got, err := h.eng.GetTaskGroup(ctx, g.TaskGroupID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.NumTaskRuns != 0 {
		t.Fatalf("rejected batches left %d runs", got.Status.NumTaskRuns)
	}
}

func TestEngine_OwnersAreIsolated(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	alice := engine.WithOwner(context.Background(), "alice")
	bob := engine.WithOwner(context.Background(), "bob")
	g, err := h.eng.CreateTaskGroup(alice, api.CreateTaskGroupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	run, err := h.eng.CreateRun(alice, inputs(1, "synthetic")[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.eng.GetTaskGroup(bob, g.TaskGroupID); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("bob reads alice's group: err = %v, want not found", err)
	}
	if _, err := h.eng.AddRuns(bob, g.TaskGroupID, api.TaskGroupRunRequest{Inputs: inputs(1, "synthetic")}); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("bob adds to alice's group: err = %v, want not found", err)
	}
	if _, err := h.eng.GetRun(bob, run.RunID); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("bob reads alice's run: err = %v, want not found", err)
	}
	if _, err := h.eng.GetRun(alice, run.RunID); err != nil {
		t.Errorf("alice reads her run: %v", err)
	}
}

func TestEngine_Cursors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ctx := context.Background()
	g, err := h.eng.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.eng.AddRuns(ctx, g.TaskGroupID, api.TaskGroupRunRequest{Inputs: inputs(3, "synthetic")}); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, ctx, h.eng, g.TaskGroupID)
	for _, cursor := range []string{"abc", "-1", "99"} {
		err := h.eng.GroupRuns(ctx, g.TaskGroupID, api.GroupRunsQuery{LastEventID: cursor}, func(*api.TaskRunEvent) error { return nil })
		if !errors.Is(err, api.ErrInvalid) {
			t.Errorf("runs cursor %q: err = %v, want invalid", cursor, err)
		}
		err = h.eng.GroupEvents(ctx, g.TaskGroupID, api.GroupEventsQuery{LastEventID: cursor}, func(api.Event) error { return nil })
		if !errors.Is(err, api.ErrInvalid) {
			t.Errorf("events cursor %q: err = %v, want invalid", cursor, err)
		}
	}

	// Resuming the events stream from each cursor gives exactly the rest.
	var all []string
	collect := func(after string) []string {
		var ids []string
		err := h.eng.GroupEvents(ctx, g.TaskGroupID, api.GroupEventsQuery{LastEventID: after}, func(ev api.Event) error {
			switch e := ev.(type) {
			case *api.TaskRunEvent:
				ids = append(ids, *e.EventID)
			case *api.TaskGroupStatusEvent:
				ids = append(ids, e.EventID)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("events after %q: %v", after, err)
		}
		return ids
	}
	all = collect("")
	for i, id := range all {
		if want := fmt.Sprint(i + 1); id != want {
			t.Fatalf("event %d has id %s, want %s (gapless from 1)", i, id, want)
		}
	}
	if rest := collect(all[1]); len(rest) != len(all)-2 {
		t.Fatalf("resume after %s gave %d events, want %d", all[1], len(rest), len(all)-2)
	}
}

func TestEngine_RetriesTransientErrors(t *testing.T) {
	t.Parallel()
	var attempts sync.Map
	p := &funcProcessor{fn: func(_ context.Context, j engine.Job) engine.Outcome {
		if j.Attempt < 2 {
			return engine.Outcome{Err: engine.Transient(errors.New("upstream 503"), 0)}
		}
		attempts.Store(j.RunID, j.Attempt)
		return engine.Outcome{Output: jsonOutput("ok")}
	}}
	h := newHarness(t, map[string]engine.Backend{"flaky": {Processor: p, MaxAttempts: 3}})
	ctx := context.Background()
	run, err := h.eng.CreateRun(ctx, api.TaskRunInput{Input: json.RawMessage(`"x"`), Processor: "flaky", TaskSpec: companySpec})
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.eng.GetRunResult(ctx, run.RunID, 20*time.Second)
	if err != nil {
		t.Fatalf("result: %v", err)
	}
	if a, _ := attempts.Load(run.RunID); a != 2 || res.Run.Status != api.StatusCompleted {
		t.Fatalf("completed on attempt %v with status %s, want attempt 2, completed", a, res.Run.Status)
	}
}

func TestEngine_InvalidOutputFailsAfterOneRetry(t *testing.T) {
	t.Parallel()
	p := &funcProcessor{fn: func(context.Context, engine.Job) engine.Outcome {
		return engine.Outcome{Output: &api.Output{Type: api.OutputJSON, Content: json.RawMessage(`{"summary":3}`)}}
	}}
	h := newHarness(t, map[string]engine.Backend{"bad": {Processor: p, MaxAttempts: 5}})
	ctx := context.Background()
	run, err := h.eng.CreateRun(ctx, api.TaskRunInput{Input: json.RawMessage(`"x"`), Processor: "bad", TaskSpec: companySpec})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.eng.GetRunResult(ctx, run.RunID, 20*time.Second)
	if !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("result err = %v, want not found for a failed run", err)
	}
	got, err := h.eng.GetRun(ctx, run.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != api.StatusFailed || got.Error == nil {
		t.Fatalf("run = %+v, want failed with an error", got)
	}
	if n := p.executions(run.RunID); n != 2 {
		t.Fatalf("executions = %d, want 2 (one retry)", n)
	}
	t.Logf("failure reason: %s", got.Error.Message)
}

func TestEngine_ResultTimesOutWhileActive(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	p := &funcProcessor{fn: func(ctx context.Context, _ engine.Job) engine.Outcome {
		<-release
		return engine.Outcome{Output: jsonOutput("late")}
	}}
	h := newHarness(t, map[string]engine.Backend{"slow": {Processor: p}})
	ctx := context.Background()
	run, err := h.eng.CreateRun(ctx, api.TaskRunInput{Input: json.RawMessage(`"x"`), Processor: "slow", TaskSpec: companySpec})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.eng.GetRunResult(ctx, run.RunID, 100*time.Millisecond); !errors.Is(err, api.ErrTimeout) {
		t.Fatalf("err = %v, want timeout", err)
	}
	close(release)
	res, err := h.eng.GetRunResult(ctx, run.RunID, 20*time.Second)
	if err != nil {
		t.Fatalf("result after release: %v", err)
	}
	if string(res.Output.Content) != `{"summary":"late","employees":7,"public":true}` {
		t.Fatalf("output = %s", res.Output.Content)
	}
}

func TestEngine_RunTimeoutFails(t *testing.T) {
	t.Parallel()
	p := &funcProcessor{fn: func(ctx context.Context, _ engine.Job) engine.Outcome {
		<-ctx.Done()
		return engine.Outcome{Err: ctx.Err()}
	}}
	h := newHarness(t, map[string]engine.Backend{"stuck": {Processor: p, Timeout: 50 * time.Millisecond}})
	got := h.failedRun("stuck")
	if got.Status != api.StatusFailed || got.Error == nil {
		t.Fatalf("run = %+v, want failed by timeout", got)
	}
}

func TestEngine_ConcurrencyLimit(t *testing.T) {
	t.Parallel()
	var running, peak atomic.Int64
	p := &funcProcessor{fn: func(context.Context, engine.Job) engine.Outcome {
		n := running.Add(1)
		for {
			old := peak.Load()
			if n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		time.Sleep(2 * time.Millisecond) // simulated work, not a wait for state
		running.Add(-1)
		return engine.Outcome{Output: jsonOutput("x")}
	}}
	h := newHarness(t, map[string]engine.Backend{"limited": {Processor: p, Concurrency: 4}})
	ctx := context.Background()
	g, _ := h.eng.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{})

	// Several add calls at once race the dispatcher's own claims for the
	// free slots; the limit must hold across both.
	var adds sync.WaitGroup
	for range 8 {
		adds.Add(1)
		go func() {
			defer adds.Done()
			if _, err := h.eng.AddRuns(ctx, g.TaskGroupID, api.TaskGroupRunRequest{Inputs: inputs(25, "limited"), DefaultTaskSpec: companySpec}); err != nil {
				t.Error(err)
			}
		}()
	}
	adds.Wait()
	waitGroup(t, ctx, h.eng, g.TaskGroupID)
	if peak.Load() > 4 || peak.Load() < 1 {
		t.Fatalf("peak concurrency = %d, want 1..4", peak.Load())
	}
}

func TestEngine_CancelGroup(t *testing.T) {
	t.Parallel()
	started := make(chan string, 10)
	p := &funcProcessor{fn: func(ctx context.Context, j engine.Job) engine.Outcome {
		started <- j.RunID
		<-ctx.Done()
		return engine.Outcome{Err: ctx.Err()}
	}}
	h := newHarness(t, map[string]engine.Backend{"hold": {Processor: p, Concurrency: 2}})
	ctx := context.Background()
	g, _ := h.eng.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{})
	if _, err := h.eng.AddRuns(ctx, g.TaskGroupID, api.TaskGroupRunRequest{Inputs: inputs(10, "hold")}); err != nil {
		t.Fatal(err)
	}
	<-started
	<-started
	if _, err := h.eng.CancelGroup(ctx, g.TaskGroupID); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	waitGroup(t, ctx, h.eng, g.TaskGroupID)
	got, _ := h.eng.GetTaskGroup(ctx, g.TaskGroupID)
	if got.Status.TaskRunStatusCounts[api.StatusCancelled] != 10 {
		t.Fatalf("counts = %v, want 10 cancelled", got.Status.TaskRunStatusCounts)
	}
}

func TestEngine_RestartReexecutesOnlyUnfinished(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	first := &funcProcessor{fn: func(ctx context.Context, j engine.Job) engine.Outcome {
		var in struct{ Company string }
		_ = json.Unmarshal(j.Input.Input, &in)
		if in.Company >= "Company 5" { // half the runs never finish before the crash
			select {
			case <-block:
			case <-ctx.Done():
				return engine.Outcome{Err: ctx.Err()}
			}
		}
		return engine.Outcome{Output: jsonOutput(in.Company)}
	}}
	h := newHarness(t, map[string]engine.Backend{"p": {Processor: first, Concurrency: 100}})
	ctx := context.Background()
	g, _ := h.eng.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{})
	add, err := h.eng.AddRuns(ctx, g.TaskGroupID, api.TaskGroupRunRequest{Inputs: inputs(10, "p"), DefaultTaskSpec: companySpec})
	if err != nil {
		t.Fatal(err)
	}

	// Wait until the five quick runs are recorded, then stop without
	// draining: the blocked runs stay leased as if the process died.
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, _ := h.eng.GetTaskGroup(ctx, g.TaskGroupID)
		if got.Status.TaskRunStatusCounts[api.StatusCompleted] == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("quick runs did not complete: %v", got.Status.TaskRunStatusCounts)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopCtx, cancel := context.WithCancel(ctx)
	cancel()
	_ = h.eng.Stop(stopCtx)
	_ = h.store.Close()
	h.eng = nil

	// Restart with a processor that counts executions.
	second := &funcProcessor{fn: func(_ context.Context, j engine.Job) engine.Outcome {
		return engine.Outcome{Output: jsonOutput("second")}
	}}
	h.start(map[string]engine.Backend{"p": {Processor: second, Concurrency: 100}})
	waitGroup(t, ctx, h.eng, g.TaskGroupID)
	reran := 0
	for _, id := range add.RunIDs {
		if second.executions(id) > 0 {
			reran++
		}
		if second.executions(id) > 0 && first.executions(id) > 0 {
			res, err := h.eng.GetRunResult(ctx, id, time.Second)
			if err != nil || string(res.Output.Content) == "" {
				t.Fatalf("rerun %s: %v", id, err)
			}
		}
	}
	if reran != 5 {
		t.Fatalf("re-executed %d runs after restart, want the 5 unfinished", reran)
	}
	got, _ := h.eng.GetTaskGroup(ctx, g.TaskGroupID)
	if got.Status.TaskRunStatusCounts[api.StatusCompleted] != 10 {
		t.Fatalf("counts = %v, want 10 completed", got.Status.TaskRunStatusCounts)
	}
	close(block)
}

func TestEngine_RateLimit(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var starts []time.Time
	p := &funcProcessor{fn: func(context.Context, engine.Job) engine.Outcome {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		return engine.Outcome{Output: jsonOutput("x")}
	}}
	// 1,200 runs a minute is 20 a second with a burst of 20.
	h := newHarness(t, map[string]engine.Backend{"metered": {Processor: p, Concurrency: 1000, RatePerMinute: 1200}})
	ctx := context.Background()
	g, _ := h.eng.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{})
	begin := time.Now()
	if _, err := h.eng.AddRuns(ctx, g.TaskGroupID, api.TaskGroupRunRequest{Inputs: inputs(60, "metered"), DefaultTaskSpec: companySpec}); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, ctx, h.eng, g.TaskGroupID)

	// However fast or slow the machine, no run may start before the limit
	// allows it: by time d at most 20 + 20*d runs have started.
	mu.Lock()
	defer mu.Unlock()
	if len(starts) != 60 {
		t.Fatalf("starts = %d, want 60", len(starts))
	}
	for i, s := range starts {
		allowed := 20 + int(20*s.Sub(begin).Seconds()) + 1
		if i+1 > allowed {
			t.Fatalf("run %d started %s after the first add; the limit allows only %d by then", i+1, s.Sub(begin), allowed)
		}
	}
}

// panicProcessor panics inside Execute.
type panicProcessor struct{}

func (panicProcessor) Execute(context.Context, []engine.Job, engine.Reporter) { panic("boom") }

func TestEngine_ProcessorPanicFailsItsRuns(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]engine.Backend{"panics": {Processor: panicProcessor{}}})
	ctx := context.Background()
	got := h.failedRun("panics")
	if got.Status != api.StatusFailed || got.Error == nil || got.Error.Message != "processor panics panicked: boom" {
		t.Fatalf("run = %+v, want failed with the panic", got)
	}
	// The engine still works.
	if _, err := h.eng.CreateRun(ctx, api.TaskRunInput{Input: json.RawMessage(`"y"`), Processor: "synthetic"}); err != nil {
		t.Fatal(err)
	}
}

func TestEngine_PausedStoresWithoutExecuting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "engine.db")
	open := func(paused bool) (*engine.Engine, store.Store) {
		st, err := sqlite.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		eng, err := engine.New(engine.Options{Store: st, Backends: processors.Default(nil), Node: "n", Paused: paused})
		if err != nil {
			t.Fatal(err)
		}
		if err := eng.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return eng, st
	}

	// A paused engine stores the runs and leaves them queued.
	eng, st := open(true)
	g, _ := eng.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{})
	if _, err := eng.AddRuns(ctx, g.TaskGroupID, api.TaskGroupRunRequest{Inputs: inputs(50, "synthetic")}); err != nil {
		t.Fatal(err)
	}
	got, _ := eng.GetTaskGroup(ctx, g.TaskGroupID)
	if got.Status.TaskRunStatusCounts[api.StatusQueued] != 50 {
		t.Fatalf("paused engine: counts = %v, want 50 queued", got.Status.TaskRunStatusCounts)
	}
	_ = eng.Stop(ctx)
	_ = st.Close()

	// The next engine on the same store executes them.
	eng, st = open(false)
	t.Cleanup(func() { _ = eng.Stop(ctx); _ = st.Close() })
	waitGroup(t, ctx, eng, g.TaskGroupID)
	got, _ = eng.GetTaskGroup(ctx, g.TaskGroupID)
	if got.Status.TaskRunStatusCounts[api.StatusCompleted] != 50 {
		t.Fatalf("after restart: counts = %v, want 50 completed", got.Status.TaskRunStatusCounts)
	}
}
