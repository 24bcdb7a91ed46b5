package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
	"github.com/taskpipe/taskpipe/pipeline"
	"github.com/taskpipe/taskpipe/processors"
	"github.com/taskpipe/taskpipe/sinks"
	"github.com/taskpipe/taskpipe/sources"
	"github.com/taskpipe/taskpipe/sources/sourcetest"
	"github.com/taskpipe/taskpipe/specs"
)

// taskSpec asks for a typed answer per company; the input schema needs a
// name that is a string.
var taskSpec = api.TaskSpec{
	InputSchema: &api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(`{
		"type": "object",
		"properties": {"name": {"type": "string"}, "id": {"type": "integer"}},
		"required": ["name"]}`)},
	OutputSchema: api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(`{
		"type": "object",
		"properties": {
			"employees": {"type": "integer", "description": "employee estimate"},
			"tier": {"type": "string", "enum": ["small", "mid", "large"]},
			"public": {"type": "boolean"}
		},
		"required": ["employees", "tier", "public"],
		"additionalProperties": false}`)},
}

// harness is one pipeline over n rows with an embedded engine.
type harness struct {
	t        *testing.T
	dir      string
	source   string // parquet path
	dbPath   string
	synth    processors.SyntheticOptions
	groups   api.TaskGroups // optional wrapper around the engine
	wrap     func(api.TaskGroups) api.TaskGroups
	wrapSink func(pipeline.Sink) pipeline.Sink // optional wrapper around the sink
	wrapProc func(engine.Processor) engine.Processor
	spec     api.TaskSpec
	progress func(pipeline.Progress)
}

// newHarness writes n rows (id, name); every 10th name is NULL when
// withNulls, which the input schema refuses.
func newHarness(t *testing.T, n int, withNulls bool) *harness {
	t.Helper()
	dir := t.TempDir()
	name := "'company ' || i"
	if withNulls {
		name = "CASE WHEN i % 10 = 3 THEN NULL ELSE 'company ' || i END"
	}
	src := sourcetest.WriteParquet(t, dir, fmt.Sprintf(
		"SELECT i::BIGINT AS id, %s AS name FROM range(%d) t(i)", name, n))
	return &harness{t: t, dir: dir, source: src, dbPath: filepath.Join(dir, "out.duckdb"), spec: taskSpec}
}

// run runs the pipeline once with opts changes applied.
func (h *harness) run(ctx context.Context, change func(*pipeline.Options)) (pipeline.Summary, error) {
	h.t.Helper()
	synth, err := processors.NewSynthetic(h.synth)
	if err != nil {
		h.t.Fatal(err)
	}
	var proc engine.Processor = synth
	if h.wrapProc != nil {
		proc = h.wrapProc(synth)
	}
	target, err := pipeline.OpenTarget(ctx, specs.Target{Engine: specs.EngineEmbedded},
		pipeline.TargetOptions{StateDir: filepath.Join(h.dir, "state"),
			Backends: map[string]engine.Backend{"synthetic": {Processor: proc, Concurrency: 20000}}})
	if err != nil {
		h.t.Fatal(err)
	}
	defer target.Close(ctx)
	src, err := sources.NewParquet(sources.ParquetOptions{Paths: []string{h.source}})
	if err != nil {
		h.t.Fatal(err)
	}
	defer src.Close()
	sink, err := sinks.NewDuckDBFile(h.dbPath, "results")
	if err != nil {
		h.t.Fatal(err)
	}
	defer sink.Close(ctx)
	groups := api.TaskGroups(target.Groups)
	if h.wrap != nil {
		groups = h.wrap(groups)
	}
	var out pipeline.Sink = sink
	if h.wrapSink != nil {
		out = h.wrapSink(sink)
	}
	opts := pipeline.Options{
		Name: "test", Source: src, Sinks: []pipeline.Sink{out}, Key: []string{"id"},
		TaskSpec: h.spec, Processor: "synthetic", Groups: groups, Runs: target.Runs, Target: target.ID,
		StateDir: filepath.Join(h.dir, "state"), FlushInterval: 20 * time.Millisecond,
		Progress: h.progress, ProgressEvery: 10 * time.Millisecond,
	}
	if change != nil {
		change(&opts)
	}
	return pipeline.Run(ctx, opts)
}

// query runs a query against the result database.
func (h *harness) query(q string, dest ...any) {
	h.t.Helper()
	db, err := sinks.OpenDuckDB(h.dbPath)
	if err != nil {
		h.t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow(q).Scan(dest...); err != nil {
		h.t.Fatalf("%s: %v", q, err)
	}
}

func TestRun_WritesEveryRowOnceAndResumes(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 200, true)
	sum, err := h.run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Rows != 200 || sum.Submitted != 180 || sum.Statuses["completed"] != 180 ||
		sum.Statuses[pipeline.StatusInvalidInput] != 20 || sum.Failed != 20 {
		t.Fatalf("first run summary = %+v", sum)
	}

	// Every key once; invalid rows carry their reason and no run.
	var rows, keys, completed, invalid, typed int64
	h.query(`SELECT count(*), count(DISTINCT id),
		count(*) FILTER (status = 'completed'),
		count(*) FILTER (status = 'invalid_input' AND run_id IS NULL AND error LIKE '%name%'),
		count(*) FILTER (typeof(employees) = 'BIGINT' AND typeof(public) = 'BOOLEAN')
		FROM results`, &rows, &keys, &completed, &invalid, &typed)
	if rows != 200 || keys != 200 || completed != 180 || invalid != 20 || typed != 200 {
		t.Errorf("table: %d rows, %d keys, %d completed, %d invalid, %d typed",
			rows, keys, completed, invalid, typed)
	}

	// A second run submits nothing and changes nothing.
	var before string
	h.query(`SELECT string_agg(run_id, ',' ORDER BY id) FROM results`, &before)
	sum, err = h.run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Submitted != 0 || sum.Skipped != 180 || sum.Statuses["completed"] != 180 {
		t.Errorf("second run summary = %+v", sum)
	}
	var after string
	h.query(`SELECT string_agg(run_id, ',' ORDER BY id) FROM results`, &after)
	if before != after {
		t.Errorf("run ids changed on a re-run")
	}
}

// failingSink passes writes on until its failAt-th, which fails.
type failingSink struct {
	pipeline.Sink
	writes, failAt int
}

func (s *failingSink) Write(ctx context.Context, rows []sinks.Row) error {
	s.writes++
	if s.writes >= s.failAt {
		return errors.New("disk full")
	}
	return s.Sink.Write(ctx, rows)
}

func TestRun_SinkFailureStopsTheRunAndARerunFinishesIt(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 1500, false)
	h.wrapSink = func(s pipeline.Sink) pipeline.Sink { return &failingSink{Sink: s, failAt: 2} }
	first, err := h.run(ctx, nil)
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("run with a failing sink: err = %v, want the sink's error", err)
	}

	// The re-run writes every row once and adds no run a second time.
	h.wrapSink = nil
	second, err := h.run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := first.Submitted + second.Submitted; n != 1500 {
		t.Errorf("runs added: %d then %d, want 1500 in all", first.Submitted, second.Submitted)
	}
	var rows, keys, runs, completed int64
	h.query(`SELECT count(*), count(DISTINCT id), count(DISTINCT run_id),
		count(*) FILTER (status = 'completed') FROM results`, &rows, &keys, &runs, &completed)
	if rows != 1500 || keys != 1500 || runs != 1500 || completed != 1500 {
		t.Errorf("table: %d rows, %d keys, %d run ids, %d completed", rows, keys, runs, completed)
	}
}

// slowRun delays the run whose input name is name; it executes the others
// at once.
type slowRun struct {
	engine.Processor
	name  string
	delay time.Duration
}

func (p *slowRun) Execute(ctx context.Context, jobs []engine.Job, r engine.Reporter) {
	rest := jobs[:0:0]
	for _, j := range jobs {
		var in struct{ Name string }
		if json.Unmarshal(j.Input.Input, &in) == nil && in.Name == p.name {
			go func() {
				time.Sleep(p.delay)
				p.Processor.Execute(ctx, []engine.Job{j}, r)
			}()
			continue
		}
		rest = append(rest, j)
	}
	p.Processor.Execute(ctx, rest, r)
}

// runsReads counts the runs the pipeline reads from the runs stream.
type runsReads struct {
	api.TaskGroups
	n atomic.Int64
}

func (c *runsReads) GroupRuns(ctx context.Context, id string, q api.GroupRunsQuery, fn func(*api.TaskRunEvent) error) error {
	return c.TaskGroups.GroupRuns(ctx, id, q, func(ev *api.TaskRunEvent) error {
		c.n.Add(1)
		return fn(ev)
	})
}

func TestRun_ASlowRunIsReadAloneNotByReadingLaterRunsAgain(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 2000, false)
	h.wrapProc = func(p engine.Processor) engine.Processor {
		return &slowRun{Processor: p, name: "company 5", delay: 1500 * time.Millisecond}
	}
	reads := &runsReads{}
	h.wrap = func(g api.TaskGroups) api.TaskGroups { reads.TaskGroups = g; return reads }
	// Twenty adds over about a second, while the slow run holds on.
	sum, err := h.run(ctx, func(o *pipeline.Options) {
		o.ChunkSize = 100
		o.AddsPerMinute = 1200
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Statuses["completed"] != 2000 {
		t.Fatalf("summary = %+v", sum)
	}
	var slow string
	h.query(`SELECT status FROM results WHERE id = 5`, &slow)
	if slow != "completed" {
		t.Errorf("the slow run's row is %q", slow)
	}
	// Each run is read about once; reading from the slow run on at every
	// scan would read thousands more.
	if n := reads.n.Load(); n > 3000 {
		t.Errorf("read %d runs for 2000 rows", n)
	}
}

func TestRun_ChangedSpecMakesNewRuns(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 30, false)
	if _, err := h.run(ctx, nil); err != nil {
		t.Fatal(err)
	}
	var first string
	h.query(`SELECT min(spec_hash) FROM results`, &first)
	h.spec.OutputSchema.JSONSchema = json.RawMessage(`{"type": "object",
		"properties": {"employees": {"type": "integer"}, "tier": {"type": "string",
		"enum": ["small", "mid", "large"]}, "public": {"type": "boolean"},
		"hq": {"type": "string"}},
		"required": ["employees", "tier", "public", "hq"], "additionalProperties": false}`)
	// The table's columns change with the spec: write to a new database.
	h.dbPath = filepath.Join(h.dir, "out2.duckdb")
	sum, err := h.run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Submitted != 30 || sum.Skipped != 0 {
		t.Errorf("summary after a spec change = %+v", sum)
	}
	var n int64
	var second string
	h.query(`SELECT count(*) FILTER (hq IS NOT NULL), min(spec_hash) FROM results`, &n, &second)
	if n != 30 || second == first {
		t.Errorf("%d rows with the new field, spec hash %s -> %s", n, first, second)
	}
}

func TestRun_RetryFailed(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 100, false)
	h.synth.FailureRate = 0.3
	sum, err := h.run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	failed := sum.Statuses["failed"]
	if failed == 0 || failed == 100 || sum.Failed != failed {
		t.Fatalf("first run: %+v", sum)
	}
	var withError int64
	h.query(`SELECT count(*) FROM results WHERE status = 'failed' AND error <> ''`, &withError)
	if withError != failed {
		t.Errorf("%d failed rows carry an error, want %d", withError, failed)
	}

	// Without --retry-failed nothing is submitted; with it only the
	// failed rows are (and fail again: the synthetic failures are
	// deterministic).
	sum, err = h.run(ctx, nil)
	if err != nil || sum.Submitted != 0 || sum.Statuses["failed"] != failed {
		t.Errorf("re-run without retry: %+v, %v", sum, err)
	}
	sum, err = h.run(ctx, func(o *pipeline.Options) { o.RetryFailed = true })
	if err != nil || sum.Submitted != failed || sum.Statuses["failed"] != failed {
		t.Errorf("re-run with retry: %+v, %v (want %d submitted)", sum, err, failed)
	}
}

func TestRun_LimitAndNoWait(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 50, false)
	h.synth.Latency = processors.LatencyOptions{Distribution: processors.LatencyFixed,
		Mean: 300 * time.Millisecond}
	sum, err := h.run(ctx, func(o *pipeline.Options) { o.Limit = 20; o.NoWait = true })
	if err != nil {
		t.Fatal(err)
	}
	if sum.Rows != 20 || sum.Submitted != 20 || sum.Waited || sum.GroupID == "" {
		t.Fatalf("no-wait summary = %+v", sum)
	}
	// The next run re-attaches to the 20 runs and adds the other 30. Its
	// source is slow to start, so the results of the first 20 runs are
	// written before the pass reads their rows: they count as skipped,
	// never as completed by this pass.
	var last pipeline.Progress
	minRunning := int64(0)
	h.progress = func(p pipeline.Progress) {
		last, minRunning = p, min(minRunning, p.Running())
	}
	sum, err = h.run(ctx, func(o *pipeline.Options) { o.Source = slowStart{o.Source} })
	if err != nil {
		t.Fatal(err)
	}
	if sum.Reattached+sum.Skipped != 20 || sum.Submitted != 30 || sum.Statuses["completed"] != 50 {
		t.Errorf("follow-up summary = %+v", sum)
	}
	if !last.Done || last.Running() != 0 || minRunning < 0 ||
		last.Completed != sum.Submitted+sum.Reattached {
		t.Errorf("follow-up progress = %+v (running %d, lowest running %d), want every run of "+
			"the pass completed and none counted twice", last, last.Running(), minRunning)
	}
	var n int64
	h.query(`SELECT count(DISTINCT run_id) FROM results WHERE status = 'completed'`, &n)
	if n != 50 {
		t.Errorf("%d completed runs in the table, want 50", n)
	}
}

// slowStart is a source that starts reading after a second.
type slowStart struct{ pipeline.Source }

func (s slowStart) Read(ctx context.Context, batchSize int, fn func(pipeline.Batch) error) error {
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Source.Read(ctx, batchSize, fn)
}

// crashAfterAdd passes add-runs calls through but fails the nth one after it
// reached the engine, as a process killed before recording run ids would.
type crashAfterAdd struct {
	api.TaskGroups
	n     int64
	calls atomic.Int64
}

func (c *crashAfterAdd) AddRuns(ctx context.Context, id string, req api.TaskGroupRunRequest) (api.TaskGroupRunResponse, error) {
	resp, err := c.TaskGroups.AddRuns(ctx, id, req)
	if c.calls.Add(1) == c.n {
		return api.TaskGroupRunResponse{}, errors.New("simulated crash after add-runs")
	}
	return resp, err
}

func TestRun_ReconcilesAnAddWhoseReplyWasLost(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 250, false)
	h.wrap = func(g api.TaskGroups) api.TaskGroups { return &crashAfterAdd{TaskGroups: g, n: 2} }
	if _, err := h.run(ctx, func(o *pipeline.Options) { o.ChunkSize = 100 }); err == nil {
		t.Fatal("first run did not fail")
	}
	h.wrap = nil
	sum, err := h.run(ctx, func(o *pipeline.Options) { o.ChunkSize = 100 })
	if err != nil {
		t.Fatal(err)
	}
	if sum.Adopted != 100 || sum.Statuses["completed"] != 250 {
		t.Errorf("summary = %+v, want 100 adopted and 250 completed", sum)
	}
	// The group holds exactly one run per row: nothing was added twice.
	synth, _ := processors.NewSynthetic(processors.SyntheticOptions{})
	target, err := pipeline.OpenTarget(ctx, specs.Target{}, pipeline.TargetOptions{
		StateDir: filepath.Join(h.dir, "state"),
		Backends: map[string]engine.Backend{"synthetic": {Processor: synth}}})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close(ctx)
	g, err := target.Groups.GetTaskGroup(ctx, sum.GroupID)
	if err != nil || g.Status.NumTaskRuns != 250 {
		t.Errorf("group has %d runs (err %v), want 250", g.Status.NumTaskRuns, err)
	}
}

func TestRun_RowsVisibleBeforeTheGroupFinishes(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 300, false)
	h.synth.Latency = processors.LatencyOptions{Distribution: processors.LatencyUniform,
		Min: 10 * time.Millisecond, Max: 3 * time.Second}

	// Poll the table from another connection while the pipeline runs.
	type seen struct {
		rows    int64
		running int64
	}
	var first atomic.Pointer[seen]
	h.progress = func(p pipeline.Progress) {
		if first.Load() != nil || p.Completed == 0 || p.Running() == 0 {
			return
		}
		db, err := sinks.OpenDuckDB(h.dbPath)
		if err != nil {
			return
		}
		defer db.Close()
		var n int64
		if err := db.QueryRow(`SELECT count(*) FROM results`).Scan(&n); err == nil && n > 0 {
			first.Store(&seen{rows: n, running: p.Running()})
		}
	}
	sum, err := h.run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := first.Load()
	if s == nil {
		t.Fatal("no row was visible while runs were still running")
	}
	t.Logf("first seen: %d rows in the table while %d runs were running", s.rows, s.running)
	if s.rows >= 300 || sum.Statuses["completed"] != 300 {
		t.Errorf("saw %d rows early; summary %+v", s.rows, sum)
	}
}

func TestRun_BadPlan(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 5, false)
	_, err := h.run(ctx, func(o *pipeline.Options) {
		o.Key = []string{"nope"}
		o.Mapping = map[string]specs.MappingEntry{"name": {Column: "missing"}}
	})
	if !errors.Is(err, pipeline.ErrPlan) {
		t.Fatalf("error %v is not ErrPlan", err)
	}
	for _, want := range []string{`key: source has no column "nope"`, `mapping.name: source has no column "missing"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// addRecorder records every add-runs call.
type addRecorder struct {
	api.TaskGroups
	calls []api.TaskGroupRunRequest
	at    []time.Time
}

func (a *addRecorder) AddRuns(ctx context.Context, id string, req api.TaskGroupRunRequest) (api.TaskGroupRunResponse, error) {
	a.calls = append(a.calls, req)
	a.at = append(a.at, time.Now())
	return a.TaskGroups.AddRuns(ctx, id, req)
}

func TestRun_ChunksRateLimitAndMetadata(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 35, false)
	rec := &addRecorder{}
	h.wrap = func(g api.TaskGroups) api.TaskGroups { rec.TaskGroups = g; return rec }
	sum, err := h.run(ctx, func(o *pipeline.Options) {
		o.ChunkSize = 10
		o.AddsPerMinute = 120 // one call every 500 ms
		o.Metadata = api.Metadata{"team": "research"}
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Submitted != 35 || len(rec.calls) != 4 {
		t.Fatalf("%d runs in %d calls, want 35 in 4", sum.Submitted, len(rec.calls))
	}
	// The limiter spaces the calls: four calls at 2 per second take at
	// least 1 s (a lower bound, whatever the machine's speed)
	// (a burst of two, then one every 500 ms).
	if gap := rec.at[3].Sub(rec.at[0]); gap < 900*time.Millisecond {
		t.Errorf("4 add calls within %s at 120 calls/min", gap)
	}
	seen := map[string]bool{}
	for _, c := range rec.calls {
		if len(c.Inputs) > 10 || c.DefaultTaskSpec == nil {
			t.Errorf("call with %d inputs, default spec %v", len(c.Inputs), c.DefaultTaskSpec != nil)
		}
		for _, in := range c.Inputs {
			key, _ := in.Metadata[pipeline.MetaKey].(string)
			fp, _ := in.Metadata[pipeline.MetaFingerprint].(string)
			if key == "" || len(fp) != 32 || in.Metadata["team"] != "research" || seen[key] {
				t.Errorf("run metadata %v (seen before: %v)", in.Metadata, seen[key])
			}
			seen[key] = true
			var input map[string]any
			if err := json.Unmarshal(in.Input, &input); err != nil || input["name"] == nil {
				t.Errorf("input %s: %v", in.Input, err)
			}
		}
	}
}

func TestRun_DuplicateKeysAreCountedNotSubmitted(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 0, false)
	h.source = sourcetest.WriteParquet(t, t.TempDir(),
		"SELECT (i % 40)::BIGINT AS id, 'company ' || i AS name FROM range(50) t(i)")
	sum, err := h.run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Rows != 50 || sum.Duplicates != 10 || sum.Submitted != 40 || sum.Statuses["completed"] != 40 {
		t.Errorf("summary %+v", sum)
	}
}

// groupRecorder remembers the metadata of the groups created through it.
type groupRecorder struct {
	api.TaskGroups
	metadata []api.Metadata
}

func (g *groupRecorder) CreateTaskGroup(ctx context.Context, req api.CreateTaskGroupRequest) (api.TaskGroup, error) {
	g.metadata = append(g.metadata, req.Metadata)
	return g.TaskGroups.CreateTaskGroup(ctx, req)
}

func TestRun_MaxCostCapsTheGroup(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 5, false)
	rec := &groupRecorder{}
	h.wrap = func(g api.TaskGroups) api.TaskGroups {
		rec.TaskGroups = g
		return rec
	}
	if _, err := h.run(ctx, func(o *pipeline.Options) { o.MaxCost = 12.5 }); err != nil {
		t.Fatal(err)
	}
	if len(rec.metadata) != 1 || rec.metadata[0][api.MetadataMaxCost] != 12.5 {
		t.Fatalf("created groups' metadata = %v, want one with %s 12.5", rec.metadata, api.MetadataMaxCost)
	}
}

func TestRun_NewSinkGetsRowsOfEarlierRuns(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 120, true)
	if _, err := h.run(ctx, nil); err != nil {
		t.Fatal(err)
	}
	var firstIDs string
	h.query(`SELECT string_agg(run_id, ',' ORDER BY id) FROM results WHERE run_id IS NOT NULL`, &firstIDs)

	// A second run into a new table submits nothing, yet the new table
	// gets every row: the finished runs from the group, the invalid rows
	// from the source.
	h.dbPath = filepath.Join(h.dir, "renamed.duckdb")
	sum, err := h.run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Submitted != 0 || sum.Skipped != 108 {
		t.Fatalf("second run summary = %+v, want nothing submitted, 108 skipped", sum)
	}
	var rows, completed, invalid, typed int64
	var ids string
	h.query(`SELECT count(*), count(*) FILTER (status = 'completed'),
		count(*) FILTER (status = 'invalid_input'),
		count(*) FILTER (typeof(employees) = 'BIGINT' AND basis IS NOT NULL),
		string_agg(run_id, ',' ORDER BY id) FILTER (run_id IS NOT NULL) FROM results`,
		&rows, &completed, &invalid, &typed, &ids)
	if rows != 120 || completed != 108 || invalid != 12 || typed != 108 || ids != firstIDs {
		t.Fatalf("new table: %d rows, %d completed, %d invalid, %d typed, same run ids %v",
			rows, completed, invalid, typed, ids == firstIDs)
	}
}

// lostGroup is a target that no longer finds one group, as a server reached
// with another API key, or one that lost its database, would answer.
type lostGroup struct {
	api.TaskGroups
	id   string
	adds atomic.Int64
}

func (l *lostGroup) GetTaskGroup(ctx context.Context, id string) (api.TaskGroup, error) {
	if id == l.id {
		return api.TaskGroup{}, fmt.Errorf("get group %s: %w", id, api.ErrNotFound)
	}
	return l.TaskGroups.GetTaskGroup(ctx, id)
}

func (l *lostGroup) AddRuns(ctx context.Context, id string, req api.TaskGroupRunRequest) (api.TaskGroupRunResponse, error) {
	l.adds.Add(int64(len(req.Inputs)))
	return l.TaskGroups.AddRuns(ctx, id, req)
}

func TestRun_ALostGroupWithWaitingRowsStopsUnlessNewGroup(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 30, false)
	first, err := h.run(ctx, func(o *pipeline.Options) { o.NoWait = true })
	if err != nil || first.Submitted != 30 {
		t.Fatalf("no-wait run: %+v, %v", first, err)
	}

	// The recorded group is not found while 30 rows wait for it: nothing
	// is submitted again without --new-group.
	lost := &lostGroup{id: first.GroupID}
	h.wrap = func(g api.TaskGroups) api.TaskGroups { lost.TaskGroups = g; return lost }
	sum, err := h.run(ctx, nil)
	if !errors.Is(err, pipeline.ErrGroupLost) || !strings.Contains(err.Error(), "30 rows wait") {
		t.Fatalf("run with the group lost: %v, want ErrGroupLost naming the 30 waiting rows", err)
	}
	if n := lost.adds.Load(); n != 0 || sum.Submitted != 0 {
		t.Fatalf("%d runs added (summary %+v), want none", n, sum)
	}

	sum, err = h.run(ctx, func(o *pipeline.Options) { o.NewGroup = true })
	if err != nil {
		t.Fatal(err)
	}
	if sum.GroupID == first.GroupID || sum.Submitted != 30 || sum.Statuses["completed"] != 30 {
		t.Fatalf("run with NewGroup = %+v, want 30 rows completed in a new group", sum)
	}
}

func TestRun_AnEmptySinkNeedingAnotherTargetsResultsStops(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 20, false)
	if _, err := h.run(ctx, nil); err != nil {
		t.Fatal(err)
	}

	// Another target with a new table: the 20 results live in the first
	// target's group, which this one cannot read.
	h.dbPath = filepath.Join(h.dir, "other.duckdb")
	sum, err := h.run(ctx, func(o *pipeline.Options) { o.Target = "elsewhere" })
	if !errors.Is(err, pipeline.ErrGroupLost) || !strings.Contains(err.Error(), "20 rows finished") {
		t.Fatalf("run on another target into a new table: %v, want ErrGroupLost naming 20 rows", err)
	}
	if sum.Submitted != 0 {
		t.Fatalf("summary %+v, want nothing submitted", sum)
	}
}

func TestRun_RowsWithANullKeyAreEachCountedInvalid(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 0, false)
	h.source = sourcetest.WriteParquet(t, h.dir,
		"SELECT CASE WHEN i % 7 = 0 THEN NULL ELSE i END::BIGINT AS id, 'company ' || i AS name FROM range(20) t(i)")
	sum, err := h.run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Rows 1, 8 and 15 have a NULL id: each is invalid, none a duplicate.
	if sum.Rows != 20 || sum.Submitted != 17 || sum.Duplicates != 0 ||
		sum.Statuses[pipeline.StatusInvalidInput] != 3 || sum.Statuses["completed"] != 17 {
		t.Fatalf("summary = %+v, want 17 completed and 3 invalid_input, no duplicates", sum)
	}
	var nullRows int64
	var reason string
	h.query(`SELECT count(*), min(error) FROM results WHERE id IS NULL AND status = 'invalid_input'`,
		&nullRows, &reason)
	if nullRows != 1 || !strings.Contains(reason, `key column "id" is NULL`) ||
		!strings.Contains(reason, "source row") {
		t.Errorf("table holds %d NULL-key rows with error %q, want one naming the column and its row",
			nullRows, reason)
	}

	// A re-run counts them the same way.
	sum, err = h.run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Submitted != 0 || sum.Duplicates != 0 || sum.Statuses[pipeline.StatusInvalidInput] != 3 {
		t.Errorf("re-run summary = %+v, want nothing submitted and 3 invalid_input", sum)
	}
}
