package processors

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
	"github.com/taskpipe/taskpipe/server"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

// The tests of the parallel kind run two real taskpipe engines on SQLite:
// an upstream one served over HTTP on 127.0.0.1 (behind a small reverse
// proxy that counts and injects faults), and a downstream one whose "core"
// processor forwards to it.

const addEndpoint = "POST /v1/tasks/groups/{taskgroup_id}/runs"

// testLog receives the logs of the processors under test; point it at
// os.Stderr to follow a failing test.
var testLog = slog.New(slog.DiscardHandler)

// parallelSpec is the output schema of the test runs.
var parallelSpec = &api.TaskSpec{OutputSchema: api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(`{
	"type": "object",
	"properties": {
		"summary": {"type": "string"},
		"employees": {"type": "integer"}
	},
	"required": ["summary", "employees"],
	"additionalProperties": false
}`)}}

// upstream is a taskpipe server whose "core" processor is synthetic with
// the given options.
type upstream struct {
	eng *engine.Engine
	url string
}

func startUpstream(t *testing.T, synthetic SyntheticOptions) *upstream {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "upstream.db"))
	if err != nil {
		t.Fatal(err)
	}
	synth, err := NewSynthetic(synthetic)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(engine.Options{Store: st, Node: "upstream", Backends: map[string]engine.Backend{
		"core": {Processor: synth, Concurrency: 20000, Timeout: time.Minute},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{Service: eng, WithOwner: engine.WithOwner})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.CloseStreams()
		ts.Close()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = eng.Stop(sctx)
		_ = st.Close()
	})
	return &upstream{eng: eng, url: ts.URL}
}

// uniformLatency is an upstream whose runs take between lo and hi.
func uniformLatency(lo, hi time.Duration) SyntheticOptions {
	return SyntheticOptions{Latency: LatencyOptions{Distribution: LatencyUniform, Min: lo, Max: hi}}
}

// runs returns every run of the upstream groups, with outputs.
func (u *upstream) runs(t *testing.T, groups []string) []*api.TaskRunEvent {
	t.Helper()
	ctx := engine.WithOwner(context.Background(), server.DevOwner)
	var out []*api.TaskRunEvent
	for _, g := range groups {
		err := u.eng.GroupRuns(ctx, g, api.GroupRunsQuery{IncludeOutput: true}, func(ev *api.TaskRunEvent) error {
			out = append(out, ev)
			return nil
		})
		if err != nil {
			t.Fatalf("read upstream group %s: %v", g, err)
		}
	}
	return out
}

// fault is one injected answer of the proxy.
type fault struct {
	status     int
	retryAfter string
	message    string
	// forward sends the request upstream first (the upstream acts) and
	// then answers with status instead of the upstream's reply.
	forward bool
	// cutAfter forwards a stream and drops the connection after this many
	// events.
	cutAfter int
	// hold forwards the request and withholds the reply until the client
	// gives up; held is closed once the upstream has answered.
	hold chan struct{}
}

// proxy is a reverse proxy on 127.0.0.1 in front of the upstream. Faults
// are queued per endpoint ("add", "events", "runs") and used in order.
type proxy struct {
	target string
	url    string

	// poison, when set, makes every add whose body contains it fail with
	// a 422, as an upstream rejecting one bad input would.
	poison string

	mu     sync.Mutex
	faults map[string][]fault
	used   map[string]int
	calls  map[string]int
	groups []string
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	p := &proxy{target: target, faults: map[string][]fault{}, used: map[string]int{}, calls: map[string]int{}}
	ts := httptest.NewServer(p)
	t.Cleanup(ts.Close)
	p.url = ts.URL
	return p
}

// inject queues faults for an endpoint.
func (p *proxy) inject(endpoint string, fs ...fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults[endpoint] = append(p.faults[endpoint], fs...)
}

// endpoint names the call of r.
func endpoint(r *http.Request) string {
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/runs"):
		return "add"
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/events"):
		return "events"
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/runs"):
		return "runs"
	case r.Method == http.MethodPost && r.URL.Path == "/v1/tasks/groups":
		return "create"
	}
	return r.Method + " " + r.URL.Path
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Count the call, remember groups and pick the next fault.
	ep := endpoint(r)
	var f *fault
	p.mu.Lock()
	p.calls[ep]++
	if ep == "add" {
		g := strings.Split(r.URL.Path, "/")[4]
		if !containsString(p.groups, g) {
			p.groups = append(p.groups, g)
		}
	}
	if q := p.faults[ep]; len(q) > 0 {
		f = &q[0]
		p.faults[ep] = q[1:]
		p.used[ep]++
	}
	p.mu.Unlock()

	// Answer without the upstream when the fault says so.
	if f != nil && f.status != 0 && !f.forward {
		writeFault(w, *f)
		return
	}

	// Reject poisoned adds, or forward.
	body, _ := io.ReadAll(r.Body)
	p.mu.Lock()
	poison := p.poison
	p.mu.Unlock()
	if poison != "" && ep == "add" && bytes.Contains(body, []byte(poison)) {
		writeFault(w, fault{status: http.StatusUnprocessableEntity, message: "input rejected: " + poison})
		return
	}
	out, _ := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), bytes.NewReader(body))
	out.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	switch {
	case f != nil && f.status != 0:
		_, _ = io.Copy(io.Discard, resp.Body)
		writeFault(w, *f)
		return
	case f != nil && f.hold != nil:
		_, _ = io.Copy(io.Discard, resp.Body)
		close(f.hold)
		<-r.Context().Done()
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	rd := bufio.NewReader(resp.Body)
	events := 0
	for {
		line, err := rd.ReadBytes('\n')
		_, _ = w.Write(line)
		if len(bytes.TrimSpace(line)) == 0 && len(line) > 0 {
			w.(http.Flusher).Flush()
			events++
			if f != nil && f.cutAfter > 0 && events >= f.cutAfter {
				panic(http.ErrAbortHandler)
			}
		}
		if err != nil {
			return
		}
	}
}

func writeFault(w http.ResponseWriter, f fault) {
	if f.retryAfter != "" {
		w.Header().Set("Retry-After", f.retryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.status)
	msg := f.message
	if msg == "" {
		msg = http.StatusText(f.status)
	}
	_ = json.NewEncoder(w).Encode(api.ErrorResponse{Type: "error", Error: api.ErrorObject{RefID: "proxy", Message: msg}})
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (p *proxy) snapshot() (calls, used map[string]int, groups []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	calls, used = map[string]int{}, map[string]int{}
	for k, v := range p.calls {
		calls[k] = v
	}
	for k, v := range p.used {
		used[k] = v
	}
	return calls, used, append([]string(nil), p.groups...)
}

// downstream is an engine whose "core" processor forwards upstream.
type downstream struct {
	eng *engine.Engine
	st  *sqlite.Store
	par *Parallel
}

// startDownstream opens (or reopens) the engine at dbPath.
func startDownstream(t *testing.T, dbPath string, opts ParallelOptions) *downstream {
	t.Helper()
	ctx := context.Background()
	opts.ClientOptions = append(opts.ClientOptions, api.WithRetries(4, 20*time.Millisecond, 500*time.Millisecond))
	if opts.FlushInterval == 0 {
		opts.FlushInterval = 50 * time.Millisecond
	}
	par, err := NewParallel(opts, testLog)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(engine.Options{Store: st, Node: "downstream", Backends: map[string]engine.Backend{
		"core": {Processor: par, Concurrency: 10000, Timeout: 2 * time.Minute, MaxAttempts: 3},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	d := &downstream{eng: eng, st: st, par: par}
	t.Cleanup(func() { d.stop(time.Second) })
	return d
}

// stop stops the engine, draining for at most drain (zero: abandon the
// running jobs at once, as a crash would), and closes its store.
func (d *downstream) stop(drain time.Duration) {
	if d.eng == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	_ = d.eng.Stop(ctx)
	_ = d.st.Close()
	d.eng = nil
}

// submit creates a downstream group of n runs on "core" and returns its id
// and the run ids.
func submit(t *testing.T, eng *engine.Engine, n int) (string, []string) {
	t.Helper()
	ctx := context.Background()
	g, err := eng.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for first := 0; first < n; first += api.MaxRunsPerAdd {
		req := api.TaskGroupRunRequest{DefaultTaskSpec: parallelSpec}
		for i := first; i < min(n, first+api.MaxRunsPerAdd); i++ {
			req.Inputs = append(req.Inputs, api.TaskRunInput{
				Input:     json.RawMessage(`{"company":"Company ` + strconv.Itoa(i) + `"}`),
				Processor: "core",
				Metadata:  api.Metadata{"row": i},
			})
		}
		resp, err := eng.AddRuns(ctx, g.TaskGroupID, req)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, resp.RunIDs...)
	}
	return g.TaskGroupID, ids
}

// finished waits until the downstream group is inactive and returns its
// runs with outputs, by run id.
func finished(t *testing.T, eng *engine.Engine, groupID string) map[string]*api.TaskRunEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for {
		g, err := eng.GetTaskGroup(ctx, groupID)
		if err != nil {
			t.Fatal(err)
		}
		if !g.Status.IsActive {
			break
		}
		err = eng.GroupEvents(ctx, groupID, api.GroupEventsQuery{Timeout: 5 * time.Second},
			func(api.Event) error { return nil })
		if err != nil {
			t.Fatalf("group %s did not finish: %v (status %+v)", groupID, err, g.Status.TaskRunStatusCounts)
		}
	}
	runs := map[string]*api.TaskRunEvent{}
	err := eng.GroupRuns(ctx, groupID, api.GroupRunsQuery{IncludeOutput: true}, func(ev *api.TaskRunEvent) error {
		runs[ev.Run.RunID] = ev
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return runs
}

// checkForwarded checks that every downstream run completed with exactly
// the output of one upstream run made for it, and that the upstream holds
// exactly one run per downstream run.
func checkForwarded(t *testing.T, down map[string]*api.TaskRunEvent, ids []string, up []*api.TaskRunEvent) {
	t.Helper()
	byTag := map[string]*api.TaskRunEvent{}
	for _, ev := range up {
		tag, _ := ev.Run.Metadata[parallelRunKey].(string)
		if byTag[tag] != nil {
			t.Errorf("run %s was submitted upstream twice (%s and %s)", tag, byTag[tag].Run.RunID, ev.Run.RunID)
		}
		byTag[tag] = ev
	}
	if len(up) != len(ids) {
		t.Errorf("upstream holds %d runs for %d downstream runs", len(up), len(ids))
	}
	bad := 0
	for _, id := range ids {
		d, u := down[id], byTag[id]
		switch {
		case d == nil || u == nil:
			t.Errorf("run %s: downstream %v, upstream %v", id, d != nil, u != nil)
		case d.Run.Status != api.StatusCompleted || d.Output == nil || u.Output == nil:
			t.Errorf("run %s: status %s, error %+v", id, d.Run.Status, d.Run.Error)
		case string(d.Output.Content) != string(u.Output.Content) || !sameBasis(d.Output.Basis, u.Output.Basis):
			t.Errorf("run %s: output %s / basis %d entries, upstream gave %s / %d",
				id, d.Output.Content, len(d.Output.Basis), u.Output.Content, len(u.Output.Basis))
		case u.Run.Processor != "core":
			t.Errorf("upstream run %s used processor %q, want the run's own \"core\"", u.Run.RunID, u.Run.Processor)
		default:
			continue
		}
		if bad++; bad > 5 {
			t.Fatal("too many bad runs")
		}
	}
}

func sameBasis(a, b []api.FieldBasis) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return len(a) > 0 && string(ja) == string(jb)
}

func TestParallel_GroupCompletesWithUpstreamOutputs(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, uniformLatency(0, 300*time.Millisecond))
	px := startProxy(t, up.url)
	d := startDownstream(t, filepath.Join(t.TempDir(), "down.db"), ParallelOptions{BaseURL: px.url})

	const n = 2500
	gid, ids := submit(t, d.eng, n)
	down := finished(t, d.eng, gid)
	_, _, groups := px.snapshot()
	if len(groups) != 1 {
		t.Fatalf("upstream groups %v, want one for the one engine group", groups)
	}
	checkForwarded(t, down, ids, up.runs(t, groups))

	// Upstream economy: few adds, no polling of the group status.
	counts := d.par.RequestCounts()
	if adds, most := counts[addEndpoint], int64((n+999)/1000+2); adds > most {
		t.Errorf("%d add-runs calls for %d runs, want <= %d (counts %v)", adds, n, most, counts)
	}
	if polls := counts["GET /v1/tasks/groups/{taskgroup_id}"]; polls != 0 {
		t.Errorf("%d group status polls, want none (counts %v)", polls, counts)
	}
	t.Logf("upstream calls: %v", counts)
}

func TestParallel_RestartAdoptsAndReattaches(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, uniformLatency(100*time.Millisecond, time.Second))
	px := startProxy(t, up.url)
	held := make(chan struct{})
	// The second add reaches the upstream, but its reply never comes back:
	// the crash window between an add and its checkpoints.
	px.inject("add", fault{}, fault{hold: held})
	dbPath := filepath.Join(t.TempDir(), "down.db")
	opts := ParallelOptions{BaseURL: px.url, MaxRunsPerAdd: 500}
	d1 := startDownstream(t, dbPath, opts)

	const n = 2000
	gid, ids := submit(t, d1.eng, n)
	select {
	case <-held:
	case <-time.After(time.Minute):
		t.Fatal("the second add never reached the upstream")
	}

	// Crash: stop without draining, then start again on the same file.
	d1.stop(0)
	d2 := startDownstream(t, dbPath, opts)
	down := finished(t, d2.eng, gid)
	_, _, groups := px.snapshot()
	checkForwarded(t, down, ids, up.runs(t, groups))
	if len(groups) != 1 {
		t.Errorf("upstream groups %v, want the one group reused after the restart", groups)
	}
	t.Logf("before restart: %v; after: %v", d1.par.RequestCounts(), d2.par.RequestCounts())
}

func TestParallel_SurvivesRateLimitsErrorsAndDrops(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, uniformLatency(0, 500*time.Millisecond))
	px := startProxy(t, up.url)
	px.inject("add",
		fault{status: http.StatusTooManyRequests, retryAfter: "1"},
		fault{},
		fault{status: http.StatusInternalServerError},                // upstream did not act
		fault{status: http.StatusInternalServerError, forward: true}, // upstream acted, reply lost
		fault{status: http.StatusTooManyRequests, retryAfter: "1"},
		fault{status: http.StatusBadGateway, forward: true},
	)
	px.inject("events", fault{cutAfter: 3}, fault{cutAfter: 2}, fault{status: http.StatusServiceUnavailable})
	px.inject("runs", fault{status: http.StatusInternalServerError}, fault{cutAfter: 10})
	d := startDownstream(t, filepath.Join(t.TempDir(), "down.db"), ParallelOptions{BaseURL: px.url, MaxRunsPerAdd: 400})

	const n = 2500
	gid, ids := submit(t, d.eng, n)
	down := finished(t, d.eng, gid)
	calls, used, groups := px.snapshot()
	checkForwarded(t, down, ids, up.runs(t, groups))
	for ep, want := range map[string]int{"add": 6, "events": 3, "runs": 2} {
		if used[ep] != want {
			t.Errorf("%s: %d faults served, want %d (calls %v)", ep, used[ep], want, calls)
		}
	}
	t.Logf("proxy calls: %v; client counts: %v", calls, d.par.RequestCounts())
}

func TestParallel_PaymentAndForbiddenFailRuns(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, SyntheticOptions{})
	cases := []struct {
		name  string
		fault *fault
		opts  ParallelOptions
		want  string
	}{
		{name: "402", fault: &fault{status: http.StatusPaymentRequired,
			message: "Insufficient credit: the task group needs $0.13 reserved"},
			want: "Insufficient credit: the task group needs $0.13 reserved"},
		{name: "403", opts: ParallelOptions{UpstreamProcessor: "no-such-processor"},
			want: `unknown processor "no-such-processor"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			px := startProxy(t, up.url)
			if tc.fault != nil {
				px.inject("add", *tc.fault)
			}
			tc.opts.BaseURL = px.url
			d := startDownstream(t, filepath.Join(t.TempDir(), "down.db"), tc.opts)
			gid, ids := submit(t, d.eng, 5)
			down := finished(t, d.eng, gid)
			for _, id := range ids {
				r := down[id].Run
				if r.Status != api.StatusFailed || r.Error == nil || !strings.Contains(r.Error.Message, tc.want) {
					t.Errorf("run %s: %s %+v, want failed with %q", id, r.Status, r.Error, tc.want)
				} else if strings.Contains(r.Error.Message, "gave up") {
					t.Errorf("run %s was retried: %q", id, r.Error.Message)
				}
			}
			if adds := d.par.RequestCounts()[addEndpoint]; adds != 1 {
				t.Errorf("%d add calls, want 1 (no retry of a refusal)", adds)
			}
		})
	}
}

func TestParallel_FailedUpstreamRunFailsJob(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, SyntheticOptions{FailureRate: 1})
	px := startProxy(t, up.url)
	d := startDownstream(t, filepath.Join(t.TempDir(), "down.db"), ParallelOptions{BaseURL: px.url})
	gid, ids := submit(t, d.eng, 3)
	down := finished(t, d.eng, gid)
	_, _, groups := px.snapshot()
	upRuns := map[string]api.TaskRun{}
	for _, ev := range up.runs(t, groups) {
		tag, _ := ev.Run.Metadata[parallelRunKey].(string)
		upRuns[tag] = ev.Run
	}
	for _, id := range ids {
		r, u := down[id].Run, upRuns[id]
		if u.Error == nil || u.Error.Message == "" {
			t.Fatalf("run %s has no failed upstream run (%+v)", id, u)
		}
		if r.Status != api.StatusFailed || r.Error == nil || r.Error.Message != u.Error.Message {
			t.Errorf("run %s: %s %+v, want failed with the upstream's %q", id, r.Status, r.Error, u.Error.Message)
		}
	}
}

func TestParallel_RejectedInputFailsAlone(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, SyntheticOptions{})
	px := startProxy(t, up.url)
	px.mu.Lock()
	px.poison = "Company 17"
	px.mu.Unlock()
	d := startDownstream(t, filepath.Join(t.TempDir(), "down.db"), ParallelOptions{BaseURL: px.url})
	gid, ids := submit(t, d.eng, 40)
	down := finished(t, d.eng, gid)
	for i, id := range ids {
		r := down[id].Run
		switch {
		case i == 17 && (r.Status != api.StatusFailed || r.Error == nil ||
			r.Error.Message != "input rejected: Company 17"):
			t.Errorf("poisoned run: %s %+v, want failed with the upstream's message", r.Status, r.Error)
		case i != 17 && r.Status != api.StatusCompleted:
			t.Errorf("run %d: %s %+v, want completed", i, r.Status, r.Error)
		}
	}
	if adds := d.par.RequestCounts()[addEndpoint]; adds < 2 {
		t.Errorf("%d add calls, want the rejected call bisected", adds)
	}
}

func TestParallel_RefusedEventsStreamFailsPendingRuns(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, SyntheticOptions{})
	px := startProxy(t, up.url)
	px.inject("events", fault{status: http.StatusNotFound, message: "TaskGroup not found"})
	d := startDownstream(t, filepath.Join(t.TempDir(), "down.db"), ParallelOptions{BaseURL: px.url})
	gid, ids := submit(t, d.eng, 10)
	down := finished(t, d.eng, gid)
	for _, id := range ids {
		if r := down[id].Run; r.Status != api.StatusFailed || r.Error == nil || r.Error.Message != "TaskGroup not found" {
			t.Errorf("run %s: %s %+v, want failed with the upstream's 404 message", id, r.Status, r.Error)
		}
	}
}

func TestParallel_RunsOutsideAGroup(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, SyntheticOptions{})
	px := startProxy(t, up.url)
	d := startDownstream(t, filepath.Join(t.TempDir(), "down.db"), ParallelOptions{BaseURL: px.url})
	ctx := context.Background()
	for i := range 3 {
		run, err := d.eng.CreateRun(ctx, api.TaskRunInput{
			Input:     json.RawMessage(`{"company":"Solo ` + strconv.Itoa(i) + `"}`),
			Processor: "core", TaskSpec: parallelSpec,
		})
		if err != nil {
			t.Fatal(err)
		}
		res, err := d.eng.GetRunResult(ctx, run.RunID, time.Minute)
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if len(res.Output.Basis) == 0 || res.Output.Basis[0].Reasoning != SyntheticReasoning {
			t.Errorf("run %d: basis %+v, want the upstream's synthetic basis", i, res.Output.Basis)
		}
	}
	if _, _, groups := px.snapshot(); len(groups) != 1 {
		t.Errorf("upstream groups %v, want one shared by the runs outside any group", groups)
	}
}

func TestParallel_Options(t *testing.T) {
	t.Parallel()
	_, err := NewParallel(ParallelOptions{}, nil)
	if err == nil || !strings.Contains(err.Error(), "base_url: must be set") ||
		!strings.Contains(err.Error(), "https://api.parallel.ai") {
		t.Errorf("no base_url: %v", err)
	}
	_, err = NewParallel(ParallelOptions{BaseURL: "api.parallel.ai", MaxRunsPerAdd: 1001, FlushInterval: -1}, nil)
	for _, want := range []string{"base_url: must be an absolute", "max_runs_per_add", "flush_interval"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("bad options: %v, want %q", err, want)
		}
	}
	p, err := NewParallel(ParallelOptions{BaseURL: "http://127.0.0.1:1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.opts.APIKeyEnv != "PARALLEL_API_KEY" || p.opts.CreatesPerMinute != 2000 ||
		p.opts.MaxRunsPerAdd != 1000 || p.opts.FlushInterval != 200*time.Millisecond {
		t.Errorf("defaults: %+v", p.opts)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestParallel_DefaultProcessorNames(t *testing.T) {
	synthOnly := []byte("version: 1\nprocessors:\n  synthetic:\n    kind: synthetic\n")
	names := func(t *testing.T, file []byte) map[string]engine.Backend {
		t.Helper()
		b, err := Parse(file, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { closeAll(b, nil) })
		return b
	}

	// No key, or a key but no base URL: nothing is mapped.
	t.Setenv("PARALLEL_API_KEY", "")
	t.Setenv("PARALLEL_BASE_URL", "")
	if b := names(t, synthOnly); len(b) != 1 {
		t.Errorf("without a key: %d processors, want 1", len(b))
	}
	t.Setenv("PARALLEL_API_KEY", "test-key")
	if b := names(t, synthOnly); len(b) != 1 {
		t.Errorf("without a base URL: %d processors, want 1", len(b))
	}

	// Key and base URL from the environment: every name is mapped and priced.
	t.Setenv("PARALLEL_BASE_URL", "http://127.0.0.1:1")
	b := names(t, synthOnly)
	if len(b) != 1+len(DefaultPrices) {
		t.Errorf("%d processors, want synthetic and %d Parallel names", len(b), len(DefaultPrices))
	}
	for _, name := range []string{"lite", "core", "core2x-fast", "ultra8x", "ultra8x-fast"} {
		be, ok := b[name]
		p, isParallel := be.Processor.(*Parallel)
		if !ok || !isParallel {
			t.Errorf("%s: not mapped to the parallel kind", name)
			continue
		}
		if be.PricePerRun != DefaultPrices[name] || p.opts.UpstreamProcessor != name ||
			p.opts.BaseURL != "http://127.0.0.1:1" || be.Timeout < time.Hour {
			t.Errorf("%s: price %v, upstream %q, base %q, timeout %s", name, be.PricePerRun,
				p.opts.UpstreamProcessor, p.opts.BaseURL, be.Timeout)
		}
	}

	// A name the file defines keeps its definition; the base URL may come
	// from the file's parallel entry.
	t.Setenv("PARALLEL_BASE_URL", "")
	b = names(t, []byte(`version: 1
processors:
  core:
    kind: synthetic
  mine:
    kind: parallel
    options:
      base_url: http://127.0.0.1:2
`))
	if _, ok := b["core"].Processor.(*Synthetic); !ok {
		t.Errorf("core: %T, want the file's synthetic", b["core"].Processor)
	}
	if p, ok := b["pro"].Processor.(*Parallel); !ok || p.opts.BaseURL != "http://127.0.0.1:2" {
		t.Errorf("pro: %T, want parallel at the file's base URL", b["pro"].Processor)
	}
}
