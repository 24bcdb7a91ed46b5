package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
)

// newTestServer starts a Server over svc; opts may adjust the options.
func newTestServer(t *testing.T, svc Service, opts ...func(*Options)) (*Server, *httptest.Server) {
	t.Helper()
	o := Options{Service: svc, WithOwner: withTestOwner}
	for _, f := range opts {
		f(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		s.CloseStreams()
		ts.Close()
	})
	return s, ts
}

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
	_, ts := newTestServer(t, &fakeService{})
	for _, path := range []string{"/_stainless_unknown_path?timeout=0", "/v2/tasks/groups"} {
		code, h, b := do(t, "GET", ts.URL+path, "My API Key", "")
		if code != http.StatusNotFound {
			t.Fatalf("%s: status %d, want 404", path, code)
		}
		errorReply(t, h, b)
	}
	// A known path with the wrong method is not an endpoint either.
	code, h, b := do(t, "DELETE", ts.URL+"/v1/tasks/groups/tgrp_1", "k", "")
	if code != http.StatusNotFound {
		t.Fatalf("DELETE: status %d, want 404", code)
	}
	if msg := errorReply(t, h, b)["message"]; !strings.Contains(msg.(string), "DELETE") {
		t.Errorf("message %q does not name the method", msg)
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
	svc := &fakeService{}
	s, ts := newTestServer(t, svc, func(o *Options) { o.Keys = keys })
	if s.DevMode() {
		t.Fatal("keyed server is in dev mode")
	}
	for _, key := range []string{"", "mallory-key"} {
		code, h, b := do(t, "GET", ts.URL+"/v1/tasks/groups/tgrp_1", key, "")
		if code != http.StatusUnauthorized {
			t.Fatalf("key %q: status %d, want 401", key, code)
		}
		errorReply(t, h, b)
	}
	code, _, _ := do(t, "GET", ts.URL+"/v1beta/tasks/groups/tgrp_1", "bob-key", "")
	if code != http.StatusOK || svc.lastOwner() != "bob" {
		t.Fatalf("bob: status %d owner %q", code, svc.lastOwner())
	}
	// Operational endpoints need no key.
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, _, _ := do(t, "GET", ts.URL+path, "", ""); code != http.StatusOK {
			t.Errorf("%s: status %d", path, code)
		}
	}
}

func TestServer_DevMode(t *testing.T) {
	t.Parallel()
	svc := &fakeService{}
	s, ts := newTestServer(t, svc)
	if !s.DevMode() {
		t.Fatal("server without keys is not in dev mode")
	}
	for _, key := range []string{"", "My API Key"} {
		code, _, _ := do(t, "GET", ts.URL+"/v1/tasks/groups/tgrp_1", key, "")
		if code != http.StatusOK || svc.lastOwner() != DevOwner {
			t.Fatalf("key %q: status %d owner %q", key, code, svc.lastOwner())
		}
	}
}

func TestServer_AddRunsValidation(t *testing.T) {
	t.Parallel()
	_, ts := newTestServer(t, &fakeService{}, func(o *Options) { o.MaxBody = 4096 })
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
		{"too many", "", `{"inputs":` + many + `}`, 422, "at most 1000"},
		{"bad refresh", "?refresh_status=maybe", `{"inputs":[` + good + `]}`, 422, "refresh_status"},
		{"unknown processor", "", `{"inputs":[{"input":"x","processor":"nope"}]}`, 403,
			`unknown processor "nope"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, h, b := do(t, "POST", ts.URL+"/v1/tasks/groups/tgrp_1/runs"+tc.query, "k", tc.body)
			// The body of "too many" is over MaxBody: it must be 413.
			if tc.name == "too many" {
				if code != http.StatusRequestEntityTooLarge {
					t.Fatalf("status %d, want 413: %s", code, b)
				}
				errorReply(t, h, b)
				return
			}
			if code != tc.code {
				t.Fatalf("status %d, want %d: %s", code, tc.code, b)
			}
			msg := errorReply(t, h, b)["message"].(string)
			if !strings.Contains(msg, tc.want) {
				t.Errorf("message %q lacks %q", msg, tc.want)
			}
		})
	}
}

func TestServer_AddRunsLimit(t *testing.T) {
	t.Parallel()
	svc := &fakeService{}
	_, ts := newTestServer(t, svc)
	one := `{"input":"x","processor":"p"}`
	body := func(n int) string {
		return `{"inputs":[` + strings.TrimSuffix(strings.Repeat(one+",", n), ",") + `]}`
	}
	code, h, b := do(t, "POST", ts.URL+"/v1/tasks/groups/tgrp_1/runs", "k", body(1001))
	if code != http.StatusUnprocessableEntity {
		t.Fatalf("1001 inputs: status %d", code)
	}
	obj := errorReply(t, h, b)
	if d := obj["detail"].(map[string]any); d["count"] != float64(1001) || d["field"] != "inputs" {
		t.Errorf("detail = %v", d)
	}
	code, _, b = do(t, "POST", ts.URL+"/v1/tasks/groups/tgrp_1/runs?refresh_status=false", "k", body(1000))
	if code != http.StatusOK {
		t.Fatalf("1000 inputs: status %d: %.200s", code, b)
	}
	var resp map[string]any
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	if ids := resp["run_ids"].([]any); len(ids) != 1000 {
		t.Errorf("run_ids has %d ids", len(ids))
	}
	for _, k := range []string{"status", "run_ids", "run_cursor", "event_cursor"} {
		if _, ok := resp[k]; !ok {
			t.Errorf("key %s missing", k)
		}
	}
	st := resp["status"].(map[string]any)
	if _, ok := st["task_run_status_counts"].(map[string]any); !ok {
		t.Errorf("task_run_status_counts = %v, want an object", st["task_run_status_counts"])
	}
}

func TestServer_OversizeBody(t *testing.T) {
	t.Parallel()
	_, ts := newTestServer(t, &fakeService{}, func(o *Options) { o.MaxBody = 100 })
	big := `{"input":"` + strings.Repeat("x", 200) + `","processor":"p"}`
	for _, path := range []string{"/v1/tasks/runs", "/v1/tasks/groups", "/v1/tasks/groups/tgrp_1/runs"} {
		code, h, b := do(t, "POST", ts.URL+path, "k", big)
		if code != http.StatusRequestEntityTooLarge {
			t.Fatalf("%s: status %d, want 413", path, code)
		}
		errorReply(t, h, b)
	}
}

func TestServer_QueryValidation(t *testing.T) {
	t.Parallel()
	_, ts := newTestServer(t, &fakeService{})
	cases := []struct{ path, want string }{
		{"/v1/tasks/groups/tgrp_1/runs?status=done", "status: must be one of"},
		{"/v1/tasks/groups/tgrp_1/runs?include_input=maybe", "include_input"},
		{"/v1/tasks/groups/tgrp_1/runs?include_output=2", "include_output"},
		{"/v1/tasks/groups/tgrp_1/events?timeout=soon", "timeout: must be a number"},
		{"/v1/tasks/groups/tgrp_1/events?timeout=-1", "timeout: must not be negative"},
		{"/v1/tasks/runs/trun_1/result?timeout=NaN", "timeout: must be a number"},
		{"/v1/tasks/runs/trun_1/result?timeout=abc", "timeout: must be a number"},
	}
	for _, tc := range cases {
		code, h, b := do(t, "GET", ts.URL+tc.path, "k", "")
		if code != http.StatusUnprocessableEntity {
			t.Fatalf("%s: status %d", tc.path, code)
		}
		obj := errorReply(t, h, b)
		if msg := obj["message"].(string); !strings.Contains(msg, tc.want) {
			t.Errorf("%s: message %q lacks %q", tc.path, msg, tc.want)
		}
	}
}

func TestServer_CreateRun(t *testing.T) {
	t.Parallel()
	svc := &fakeService{}
	_, ts := newTestServer(t, svc)
	code, h, b := do(t, "POST", ts.URL+"/v1/tasks/runs?beta=true", "k",
		`{"input":{"company":"Acme"},"processor":"base","metadata":{"row":17}}`)
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
	code, h, b = do(t, "POST", ts.URL+"/v1/tasks/runs", "k", `{"input":"x","processor":["base"]}`)
	if code != 422 || !strings.Contains(errorReply(t, h, b)["message"].(string),
		"processor: must be a string") {
		t.Errorf("wrong-typed processor: %d %s", code, b)
	}
}

func TestServer_ResultStatuses(t *testing.T) {
	t.Parallel()
	svc := &fakeService{}
	_, ts := newTestServer(t, svc)
	code, _, b := do(t, "GET", ts.URL+"/v1/tasks/runs/trun_1/result", "k", "")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	var res map[string]any
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if basis, ok := res["output"].(map[string]any)["basis"].([]any); !ok || len(basis) != 0 {
		t.Errorf("output.basis = %v, want []", res["output"])
	}
	if svc.locked(func() any { return svc.resTO }) != DefaultResultTimeout {
		t.Errorf("default timeout %v", svc.resTO)
	}
	do(t, "GET", ts.URL+"/v1/tasks/runs/trun_1/result?timeout=2.5", "k", "")
	if svc.locked(func() any { return svc.resTO }) != 2500*time.Millisecond {
		t.Errorf("timeout 2.5 became %v", svc.resTO)
	}
	do(t, "GET", ts.URL+"/v1/tasks/runs/trun_1/result?timeout=99999", "k", "")
	if svc.locked(func() any { return svc.resTO }) != MaxResultTimeout {
		t.Errorf("timeout 99999 became %v", svc.resTO)
	}
	for kind, want := range map[error]int{api.ErrTimeout: 408, api.ErrNotFound: 404,
		errors.New("disk on fire"): 500} {
		svc.result = func(context.Context, time.Duration) (api.TaskRunResult, error) {
			if errors.Is(kind, api.ErrTimeout) || errors.Is(kind, api.ErrNotFound) {
				return api.TaskRunResult{}, &api.Error{Kind: kind, Message: "scripted"}
			}
			return api.TaskRunResult{}, kind
		}
		code, h, b := do(t, "GET", ts.URL+"/v1/tasks/runs/trun_1/result?timeout=0", "k", "")
		if code != want {
			t.Fatalf("%v: status %d, want %d", kind, code, want)
		}
		msg := errorReply(t, h, b)["message"]
		if want == 500 && msg != "internal server error" {
			t.Errorf("500 leaks %q", msg)
		}
	}
}

func TestServer_Panic(t *testing.T) {
	t.Parallel()
	_, ts := newTestServer(t, &fakeService{})
	code, h, b := do(t, "POST", ts.URL+"/v1/tasks/runs", "k", `{"input":"x","processor":"panic"}`)
	if code != 500 {
		t.Fatalf("status %d", code)
	}
	errorReply(t, h, b)
	if code, _, _ := do(t, "GET", ts.URL+"/healthz", "", ""); code != 200 {
		t.Fatalf("server down after panic: %d", code)
	}
}

func TestServer_SSEFraming(t *testing.T) {
	t.Parallel()
	svc := &fakeService{}
	_, ts := newTestServer(t, svc)
	code, h, b := do(t, "GET", ts.URL+"/v1beta/tasks/groups/tgrp_1/runs?status=queued&include_input=true&last_event_id=7", "k", "")
	if code != 200 {
		t.Fatalf("status %d: %s", code, b)
	}
	if h.Get("Content-Type") != "text/event-stream" || h.Get("Cache-Control") != "no-cache" {
		t.Errorf("headers %v", h)
	}
	frames := strings.Split(strings.TrimSuffix(string(b), "\n\n"), "\n\n")
	if len(frames) != 2 {
		t.Fatalf("%d frames in %q", len(frames), b)
	}
	for i, f := range frames {
		lines := strings.Split(f, "\n")
		if len(lines) != 2 || lines[0] != "event: task_run.state" || !strings.HasPrefix(lines[1], "data: {") {
			t.Fatalf("frame %d = %q", i, f)
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[1], "data: ")), &ev); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"type", "event_id", "input", "run", "output"} {
			if _, ok := ev[k]; !ok {
				t.Errorf("frame %d lacks %s", i, k)
			}
		}
		if ev["event_id"] != fmt.Sprint(i+1) {
			t.Errorf("frame %d event_id %v", i, ev["event_id"])
		}
	}
	if q := svc.locked(func() any { return svc.runsQ }).(*api.GroupRunsQuery); q.Status != api.StatusQueued || !q.IncludeInput || q.IncludeOutput || q.LastEventID != "7" {
		t.Errorf("query reached the service as %+v", q)
	}
}

func TestServer_StreamErrors(t *testing.T) {
	t.Parallel()
	svc := &fakeService{}
	_, ts := newTestServer(t, svc)

	// Before the first event: a JSON reply with the error's status.
	code, h, b := do(t, "GET", ts.URL+"/v1/tasks/groups/tgrp_404/runs", "k", "")
	if code != 404 {
		t.Fatalf("status %d", code)
	}
	errorReply(t, h, b)

	// After it: a final error event.
	svc.groupEvents = func(ctx context.Context, q api.GroupEventsQuery, fn func(api.Event) error) error {
		if err := fn(&api.TaskGroupStatusEvent{Type: api.EventGroupStatus, EventID: "3"}); err != nil {
			return err
		}
		return api.Errorf(api.ErrInvalid, "last_event_id: scripted")
	}
	code, _, b = do(t, "GET", ts.URL+"/v1/tasks/groups/tgrp_1/events", "k", "")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	var got []api.Event
	if err := api.ReadEvents(strings.NewReader(string(b)), func(ev api.Event) error {
		got = append(got, ev)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d events in %q", len(got), b)
	}
	ee, ok := got[1].(*api.ErrorEvent)
	if !ok || ee.Error.Message != "last_event_id: scripted" || ee.Error.RefID == "" {
		t.Fatalf("last event %#v", got[1])
	}
	if st := got[0].(*api.TaskGroupStatusEvent).Status; st.TaskRunStatusCounts == nil {
		t.Error("task_run_status_counts was null on the wire")
	}
}

// openStream starts a GET and returns its response once headers arrived.
func openStream(t *testing.T, ctx context.Context, url string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestServer_KeepaliveAndClose(t *testing.T) {
	t.Parallel()
	svc := &fakeService{}
	release := make(chan struct{})
	svc.groupEvents = func(ctx context.Context, q api.GroupEventsQuery, fn func(api.Event) error) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-release:
			return fn(&api.TaskGroupStatusEvent{Type: api.EventGroupStatus, EventID: "9"})
		}
	}
	s, ts := newTestServer(t, svc, func(o *Options) { o.Keepalive = 5 * time.Millisecond })

	// An idle stream gets keep-alive comments, then its event.
	resp := openStream(t, context.Background(), ts.URL+"/v1/tasks/groups/tgrp_1/events?timeout=30")
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != ": keepalive\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	if svc.locked(func() any { return svc.evQ.Timeout }).(time.Duration) != 30*time.Second {
		t.Errorf("timeout reached the service as %v", svc.locked(func() any { return svc.evQ.Timeout }).(time.Duration))
	}
	close(release)
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "event: task_group_status\ndata: {") || strings.Contains(string(rest), "id:") {
		t.Fatalf("rest of stream %q", rest)
	}

	// CloseStreams ends a waiting stream cleanly.
	svc2 := &fakeService{groupEvents: func(ctx context.Context, q api.GroupEventsQuery,
		fn func(api.Event) error) error {
		<-ctx.Done()
		return ctx.Err()
	}}
	s2, ts2 := newTestServer(t, svc2, func(o *Options) { o.Keepalive = time.Hour })
	_ = s
	resp2 := openStream(t, context.Background(), ts2.URL+"/v1/tasks/runs/trun_1/events")
	if resp2.StatusCode != 200 {
		t.Fatalf("run events: %d", resp2.StatusCode)
	}
	b, _ := io.ReadAll(resp2.Body) // the fake run stream ends by itself
	if !strings.Contains(string(b), "event: task_run.progress_msg.plan\n") {
		t.Fatalf("run stream %q", b)
	}
	waiting := make(chan []byte)
	go func() {
		req, _ := http.NewRequest("GET", ts2.URL+"/v1/tasks/groups/tgrp_1/events", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			waiting <- []byte(err.Error())
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		waiting <- append([]byte(resp.Status+" "), b...)
	}()
	// Wait until the stream is registered, then close.
	deadline := time.Now().Add(10 * time.Second)
	for svc2.lastOwner() == "" && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	s2.CloseStreams()
	select {
	case got := <-waiting:
		if !strings.HasPrefix(string(got), "503") {
			t.Fatalf("closed stream before any event: %q, want 503", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream did not end after CloseStreams")
	}
}

func TestServer_Metrics(t *testing.T) {
	t.Parallel()
	_, ts := newTestServer(t, &fakeService{})
	do(t, "GET", ts.URL+"/nowhere", "", "")
	do(t, "GET", ts.URL+"/v1/tasks/groups/tgrp_1", "k", "")
	do(t, "GET", ts.URL+"/v1/tasks/groups/tgrp_1/runs", "k", "")
	_, _, b := do(t, "GET", ts.URL+"/metrics", "", "")
	for _, want := range []string{
		`taskpipe_http_requests_total{code="404",route="unmatched"} 1`,
		`taskpipe_http_requests_total{code="200",route="GET /v1/tasks/groups/{taskgroup_id}"} 1`,
		`taskpipe_sse_clients{route="GET /v1/tasks/groups/{taskgroup_id}/runs"} 0`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
