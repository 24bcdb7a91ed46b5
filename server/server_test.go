package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
)

// do sends a raw request and returns the status, the headers and the body.
func do(t *testing.T, method, url, key, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("x-api-key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// errorReply checks that b is an ErrorResponse and returns its error
// object as a map.
func errorReply(t *testing.T, h http.Header, b []byte) map[string]any {
	t.Helper()
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var top map[string]any
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatalf("error body %q: %v", b, err)
	}
	if top["type"] != "error" {
		t.Errorf("type = %v, want error (body %s)", top["type"], b)
	}
	obj, ok := top["error"].(map[string]any)
	if !ok {
		t.Fatalf("error key missing in %s", b)
	}
	for _, k := range []string{"ref_id", "message", "detail"} {
		if _, ok := obj[k]; !ok {
			t.Errorf("error.%s missing in %s", k, b)
		}
	}
	if id, _ := obj["ref_id"].(string); len(id) != 36 {
		t.Errorf("ref_id = %q, want a UUID", id)
	}
	return obj
}

func TestServer_UnknownPath(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	gid := s.createGroup(t, "k")
	for _, path := range []string{"/_stainless_unknown_path?timeout=0", "/v2/tasks/groups"} {
		code, h, b := do(t, "GET", s.ts.URL+path, "My API Key", "")
		if code != http.StatusNotFound {
			t.Fatalf("%s: status %d, want 404", path, code)
		}
		errorReply(t, h, b)
	}
	// A known path with the wrong method is not an endpoint either.
	code, h, b := do(t, "DELETE", s.ts.URL+"/v1/tasks/groups/"+gid, "k", "")
	if code != http.StatusNotFound {
		t.Fatalf("DELETE: status %d, want 404", code)
	}
	if msg := errorReply(t, h, b)["message"]; !strings.Contains(msg.(string), "DELETE") {
		t.Errorf("message %q does not name the method", msg)
	}
	if g := s.group(t, gid); g.TaskGroupID != gid {
		t.Errorf("the group is gone after DELETE: %+v", g)
	}
}

func TestServer_Auth(t *testing.T) {
	t.Parallel()
	keys := &Keyring{}
	if err := keys.Add("alice", "alice-key"); err != nil {
		t.Fatal(err)
	}
	if err := keys.Add("bob", "bob-key"); err != nil {
		t.Fatal(err)
	}
	s := newStack(t, func(o *Options) { o.Keys = keys })
	if s.srv.DevMode() {
		t.Fatal("keyed server is in dev mode")
	}
	for _, key := range []string{"", "mallory-key"} {
		code, h, b := do(t, "POST", s.ts.URL+"/v1/tasks/groups", key, "{}")
		if code != http.StatusUnauthorized {
			t.Fatalf("key %q: status %d, want 401", key, code)
		}
		errorReply(t, h, b)
	}

	// What bob's key creates belongs to bob, and only bob sees it.
	gid := s.createGroup(t, "bob-key")
	stored, err := s.store.GetGroup(context.Background(), gid)
	if err != nil || stored.Owner != "bob" {
		t.Fatalf("stored group owner %q, %v; want bob", stored.Owner, err)
	}
	if code, _, b := do(t, "GET", s.ts.URL+"/v1beta/tasks/groups/"+gid, "bob-key", ""); code != http.StatusOK {
		t.Fatalf("bob reads his group: %d %s", code, b)
	}
	code, h, b := do(t, "GET", s.ts.URL+"/v1/tasks/groups/"+gid, "alice-key", "")
	if code != http.StatusNotFound {
		t.Fatalf("alice reads bob's group: %d %s", code, b)
	}
	errorReply(t, h, b)

	// Operational endpoints need no key.
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, _, _ := do(t, "GET", s.ts.URL+path, "", ""); code != http.StatusOK {
			t.Errorf("%s: status %d", path, code)
		}
	}
}

func TestServer_DevMode(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	if !s.srv.DevMode() {
		t.Fatal("server without keys is not in dev mode")
	}
	gid := s.createGroup(t, "")
	stored, err := s.store.GetGroup(context.Background(), gid)
	if err != nil || stored.Owner != DevOwner {
		t.Fatalf("stored group owner %q, %v; want %q", stored.Owner, err, DevOwner)
	}
	for _, key := range []string{"", "My API Key", "anything"} {
		code, _, b := do(t, "GET", s.ts.URL+"/v1/tasks/groups/"+gid, key, "")
		if code != http.StatusOK {
			t.Fatalf("key %q: status %d: %s", key, code, b)
		}
	}
}

func TestServer_AddRunsValidation(t *testing.T) {
	t.Parallel()
	s := newStack(t, func(o *Options) { o.MaxBody = 4096 })
	gid := s.createGroup(t, "k")
	good := `{"input":"x","processor":"synthetic"}`
	many := "[" + strings.TrimSuffix(strings.Repeat(`{"input":"x","processor":"p"},`, 1001), ",") + "]"
	cases := []struct {
		name, query, body string
		code              int
		want              string // substring of the message
	}{
		{"malformed", "", `{"inputs": [`, 422, "malformed JSON at byte offset"},
		{"empty body", "", ``, 422, "request body"},
		{"not an object", "", `[1]`, 422, "request body: must be an object"},
		{"no inputs", "", `{}`, 422, "inputs: is required"},
		{"inputs not array", "", `{"inputs": 3}`, 422, "inputs: must be an array"},
		{"processor type", "", `{"inputs":[` + strings.Repeat(good+",", 3) +
			`{"input":"x","processor":7}]}`, 422, "inputs[3].processor: must be a string"},
		{"input missing", "", `{"inputs":[{"processor":"p"}]}`, 422, "inputs[0].input: is required"},
		{"input number", "", `{"inputs":[{"input":5,"processor":"p"}]}`, 422,
			"inputs[0].input: must be a string or an object"},
		{"element not object", "", `{"inputs":["x"]}`, 422, "inputs[0]: must be an object"},
		{"metadata value", "", `{"inputs":[{"input":"x","processor":"p","metadata":{"a":[1]}}]}`,
			422, "inputs[0].metadata.a"},
		{"bad schema type", "", `{"inputs":[{"input":"x","processor":"p",
			"task_spec":{"output_schema":{"type":"yaml"}}}]}`, 422,
			"inputs[0].task_spec.output_schema: type must be json, text or auto"},
		{"json without schema", "", `{"inputs":[` + good + `],
			"default_task_spec":{"output_schema":{"type":"json"}}}`, 422,
			"default_task_spec.output_schema.json_schema: is required"},
		{"too many", "", `{"inputs":` + many + `}`, 413, "larger than the limit"},
		{"bad refresh", "?refresh_status=maybe", `{"inputs":[` + good + `]}`, 422, "refresh_status"},
		{"unknown processor", "", `{"inputs":[` + good + `,{"input":"x","processor":"nope"}]}`, 403,
			`inputs[1].processor: unknown processor "nope"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, h, b := do(t, "POST", s.ts.URL+"/v1/tasks/groups/"+gid+"/runs"+tc.query, "k", tc.body)
			if code != tc.code {
				t.Fatalf("status %d, want %d: %s", code, tc.code, b)
			}
			msg := errorReply(t, h, b)["message"].(string)
			if !strings.Contains(msg, tc.want) {
				t.Errorf("message %q lacks %q", msg, tc.want)
			}
		})
	}
	// All or nothing: no rejected call left a run behind.
	if g := s.group(t, gid); g.Status.NumTaskRuns != 0 {
		t.Errorf("rejected calls added %d runs", g.Status.NumTaskRuns)
	}
}

func TestServer_AddRunsLimit(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	gid := s.createGroup(t, "k")
	one := `{"input":"x","processor":"synthetic"}`
	body := func(n int) string {
		return `{"inputs":[` + strings.TrimSuffix(strings.Repeat(one+",", n), ",") + `]}`
	}
	code, h, b := do(t, "POST", s.ts.URL+"/v1/tasks/groups/"+gid+"/runs", "k", body(1001))
	if code != http.StatusUnprocessableEntity {
		t.Fatalf("1001 inputs: status %d", code)
	}
	obj := errorReply(t, h, b)
	if d := obj["detail"].(map[string]any); d["count"] != float64(1001) || d["field"] != "inputs" {
		t.Errorf("detail = %v", d)
	}
	code, _, b = do(t, "POST", s.ts.URL+"/v1/tasks/groups/"+gid+"/runs?refresh_status=false", "k", body(1000))
	if code != http.StatusOK {
		t.Fatalf("1000 inputs: status %d: %.200s", code, b)
	}
	var resp map[string]any
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"status", "run_ids", "run_cursor", "event_cursor"} {
		if _, ok := resp[k]; !ok {
			t.Errorf("key %s missing", k)
		}
	}
	ids := resp["run_ids"].([]any)
	distinct := make(map[string]bool, len(ids))
	for _, id := range ids {
		distinct[id.(string)] = true
	}
	if len(ids) != 1000 || len(distinct) != 1000 {
		t.Fatalf("run_ids has %d ids, %d distinct", len(ids), len(distinct))
	}
	st := resp["status"].(map[string]any)
	if _, ok := st["task_run_status_counts"].(map[string]any); !ok {
		t.Errorf("task_run_status_counts = %v, want an object", st["task_run_status_counts"])
	}
	if st["num_task_runs"] != float64(1000) {
		t.Errorf("num_task_runs = %v, want 1000", st["num_task_runs"])
	}
	// Every id names a run of the group.
	for _, id := range []string{ids[0].(string), ids[999].(string)} {
		if code, _, b := do(t, "GET", s.ts.URL+"/v1/tasks/groups/"+gid+"/runs/"+id, "k", ""); code != 200 {
			t.Errorf("run %s: %d %s", id, code, b)
		}
	}
}

func TestServer_OversizeBody(t *testing.T) {
	t.Parallel()
	s := newStack(t, func(o *Options) { o.MaxBody = 100 })
	gid := s.createGroup(t, "k")
	big := `{"input":"` + strings.Repeat("x", 200) + `","processor":"synthetic"}`
	for _, path := range []string{"/v1/tasks/runs", "/v1/tasks/groups", "/v1/tasks/groups/" + gid + "/runs"} {
		code, h, b := do(t, "POST", s.ts.URL+path, "k", big)
		if code != http.StatusRequestEntityTooLarge {
			t.Fatalf("%s: status %d, want 413", path, code)
		}
		if d := errorReply(t, h, b)["detail"].(map[string]any); d["limit_bytes"] != float64(100) {
			t.Errorf("%s: detail %v", path, d)
		}
	}
}

func TestServer_QueryValidation(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	gid := s.createGroup(t, "k")
	rid := s.addRuns(t, "k", gid, "synthetic", 1)[0]
	cases := []struct{ path, want string }{
		{"/v1/tasks/groups/" + gid + "/runs?status=done", "status: must be one of"},
		{"/v1/tasks/groups/" + gid + "/runs?include_input=maybe", "include_input"},
		{"/v1/tasks/groups/" + gid + "/runs?include_output=2", "include_output"},
		{"/v1/tasks/groups/" + gid + "/events?timeout=soon", "timeout: must be a number"},
		{"/v1/tasks/groups/" + gid + "/events?timeout=-1", "timeout: must not be negative"},
		{"/v1/tasks/groups/" + gid + "/runs?last_event_id=abc", "last_event_id: malformed cursor"},
		{"/v1/tasks/runs/" + rid + "/result?timeout=NaN", "timeout: must be a number"},
		{"/v1/tasks/runs/" + rid + "/result?timeout=abc", "timeout: must be a number"},
	}
	for _, tc := range cases {
		code, h, b := do(t, "GET", s.ts.URL+tc.path, "k", "")
		if code != http.StatusUnprocessableEntity {
			t.Fatalf("%s: status %d: %s", tc.path, code, b)
		}
		obj := errorReply(t, h, b)
		if msg := obj["message"].(string); !strings.Contains(msg, tc.want) {
			t.Errorf("%s: message %q lacks %q", tc.path, msg, tc.want)
		}
	}
}

func TestServer_CreateRun(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	code, h, b := do(t, "POST", s.ts.URL+"/v1/tasks/runs?beta=true", "k",
		`{"input":{"company":"Acme"},"processor":"synthetic","metadata":{"row":17}}`)
	if code != http.StatusAccepted {
		t.Fatalf("status %d: %s", code, b)
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var run map[string]any
	if err := json.Unmarshal(b, &run); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"run_id", "interaction_id", "status", "is_active", "warnings",
		"error", "processor", "metadata", "taskgroup_id", "created_at", "modified_at"} {
		if _, ok := run[k]; !ok {
			t.Errorf("key %s missing in %s", k, b)
		}
	}
	for _, k := range []string{"warnings", "error", "taskgroup_id"} {
		if run[k] != nil {
			t.Errorf("%s = %v, want null", k, run[k])
		}
	}
	id, _ := run["run_id"].(string)
	if len(id) != 37 || !strings.HasPrefix(id, "trun_") || run["interaction_id"] != id {
		t.Errorf("run_id %q, interaction_id %v", id, run["interaction_id"])
	}
	// The dispatcher may claim the run before the reply is written.
	if (run["status"] != "queued" && run["status"] != "running") || run["is_active"] != true ||
		run["processor"] != "synthetic" {
		t.Errorf("new run %s", b)
	}
	if m, _ := run["metadata"].(map[string]any); m["row"] != float64(17) {
		t.Errorf("metadata %v", run["metadata"])
	}
	code, h, b = do(t, "POST", s.ts.URL+"/v1/tasks/runs", "k", `{"input":"x","processor":["base"]}`)
	if code != 422 || !strings.Contains(errorReply(t, h, b)["message"].(string),
		"processor: must be a string") {
		t.Errorf("wrong-typed processor: %d %s", code, b)
	}
	code, h, b = do(t, "POST", s.ts.URL+"/v1/tasks/runs", "k", `{"input":"x","processor":"base"}`)
	if code != 403 || !strings.Contains(errorReply(t, h, b)["message"].(string),
		`unknown processor "base"`) {
		t.Errorf("unknown processor: %d %s", code, b)
	}
}

// createRun creates a run of processor and returns its id.
func (s *stack) createRun(t *testing.T, processor string) string {
	t.Helper()
	code, _, b := do(t, "POST", s.ts.URL+"/v1/tasks/runs", "k",
		`{"input":{"company":"Acme"},"processor":"`+processor+`"}`)
	if code != http.StatusAccepted {
		t.Fatalf("create run: %d %s", code, b)
	}
	var run api.TaskRun
	if err := json.Unmarshal(b, &run); err != nil {
		t.Fatal(err)
	}
	return run.RunID
}

func TestServer_ResultStatuses(t *testing.T) {
	t.Parallel()
	s := newStack(t)

	// A completed run: 200 with its output, basis and citations as lists.
	done := s.createRun(t, "synthetic")
	code, _, b := do(t, "GET", s.ts.URL+"/v1/tasks/runs/"+done+"/result", "k", "")
	if code != 200 {
		t.Fatalf("status %d: %s", code, b)
	}
	if s.spy.lastTimeout() != DefaultResultTimeout {
		t.Errorf("default timeout %v", s.spy.lastTimeout())
	}
	var res map[string]any
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if r := res["run"].(map[string]any); r["run_id"] != done || r["status"] != "completed" {
		t.Errorf("result run %v", r)
	}
	basis, ok := res["output"].(map[string]any)["basis"].([]any)
	if !ok || len(basis) == 0 {
		t.Fatalf("output.basis = %v, want a non-empty list", res["output"])
	}
	for _, fb := range basis {
		fb := fb.(map[string]any)
		if c, ok := fb["citations"].([]any); !ok || len(c) != 0 || fb["confidence"] != "low" {
			t.Errorf("basis entry %v, want citations [] and confidence low", fb)
		}
	}
	do(t, "GET", s.ts.URL+"/v1/tasks/runs/"+done+"/result?timeout=2.5", "k", "")
	if s.spy.lastTimeout() != 2500*time.Millisecond {
		t.Errorf("timeout 2.5 became %v", s.spy.lastTimeout())
	}
	do(t, "GET", s.ts.URL+"/v1/tasks/runs/"+done+"/result?timeout=99999", "k", "")
	if s.spy.lastTimeout() != MaxResultTimeout {
		t.Errorf("timeout 99999 became %v", s.spy.lastTimeout())
	}

	// An active run times out with 408; a failed or unknown one is 404.
	held := s.createRun(t, "hold")
	start := time.Now()
	code, h, b := do(t, "GET", s.ts.URL+"/v1/tasks/runs/"+held+"/result?timeout=0.2", "k", "")
	if code != http.StatusRequestTimeout || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("active run: status %d after %v: %s", code, time.Since(start), b)
	}
	errorReply(t, h, b)
	failed := s.createRun(t, "failing")
	code, h, b = do(t, "GET", s.ts.URL+"/v1/tasks/runs/"+failed+"/result?timeout=30", "k", "")
	if code != http.StatusNotFound || !strings.Contains(errorReply(t, h, b)["message"].(string), "failed") {
		t.Fatalf("failed run: status %d: %s", code, b)
	}
	code, h, b = do(t, "GET", s.ts.URL+"/v1/tasks/runs/trun_missing/result?timeout=0", "k", "")
	if code != http.StatusNotFound {
		t.Fatalf("unknown run: status %d: %s", code, b)
	}
	errorReply(t, h, b)

	// A store that fails is a 500 with a generic message and a logged ref_id.
	if err := s.store.Close(); err != nil {
		t.Fatal(err)
	}
	code, h, b = do(t, "GET", s.ts.URL+"/v1/tasks/runs/"+done+"/result?timeout=0", "k", "")
	if code != http.StatusInternalServerError {
		t.Fatalf("closed store: status %d: %s", code, b)
	}
	obj := errorReply(t, h, b)
	if obj["message"] != "internal server error" {
		t.Errorf("500 leaks %q", obj["message"])
	}
	if logs := s.logs.String(); !strings.Contains(logs, obj["ref_id"].(string)) {
		t.Errorf("ref_id %v is not in the log:\n%s", obj["ref_id"], logs)
	}
}

func TestServer_Panic(t *testing.T) {
	t.Parallel()
	// No request reaches a panic in the real handlers, so the recovering
	// middleware is tested directly around a handler that panics.
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	s := newStack(t, func(o *Options) { o.Logger = log })
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) { panic("scripted panic") })
	mux.HandleFunc("GET /fine", s.srv.healthz)
	ts := httptest.NewServer(s.srv.observe(mux))
	t.Cleanup(ts.Close)

	code, h, b := do(t, "GET", ts.URL+"/boom", "", "")
	if code != 500 {
		t.Fatalf("status %d", code)
	}
	obj := errorReply(t, h, b)
	if obj["message"] != "internal server error" {
		t.Errorf("message %q", obj["message"])
	}
	out := logs.String()
	if !strings.Contains(out, "panic serving request") || !strings.Contains(out, "scripted panic") ||
		!strings.Contains(out, obj["ref_id"].(string)) {
		t.Errorf("log lacks the panic or its ref_id:\n%s", out)
	}
	if code, _, _ := do(t, "GET", ts.URL+"/fine", "", ""); code != 200 {
		t.Fatalf("server down after panic: %d", code)
	}
	if v := s.metricValue(t, `taskpipe_http_requests_total{code="500",route="GET /boom"}`); v != "1" {
		t.Errorf("panics counted %q, want 1", v)
	}
}

func TestServer_Metrics(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	gid := s.createGroup(t, "k")
	s.addRuns(t, "k", gid, "synthetic", 3)
	do(t, "GET", s.ts.URL+"/nowhere", "", "")
	do(t, "GET", s.ts.URL+"/v1/tasks/groups/"+gid, "k", "")
	code, _, b := do(t, "GET", s.ts.URL+"/v1/tasks/groups/"+gid+"/runs", "k", "")
	if code != 200 || strings.Count(string(b), "event: task_run.state\n") != 3 {
		t.Fatalf("runs stream %d %q", code, b)
	}
	for sample, want := range map[string]string{
		`taskpipe_http_requests_total{code="404",route="unmatched"}`:                                     "1",
		`taskpipe_http_requests_total{code="200",route="GET /v1/tasks/groups/{taskgroup_id}"}`:           "1",
		`taskpipe_http_requests_total{code="200",route="POST /v1/tasks/groups"}`:                         "1",
		`taskpipe_sse_clients{route="GET /v1/tasks/groups/{taskgroup_id}/runs"}`:                         "0",
		`taskpipe_http_request_duration_seconds_count{route="GET /v1/tasks/groups/{taskgroup_id}/runs"}`: "1",
	} {
		if got := s.metricValue(t, sample); got != want {
			t.Errorf("%s = %q, want %s", sample, got, want)
		}
	}
}
