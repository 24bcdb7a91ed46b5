package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testClient returns a client of url with fast retries.
func testClient(url string) *Client {
	return NewClient(url, "secret-key", WithRetries(3, time.Millisecond, 4*time.Millisecond))
}

func TestClient_ErrorReply(t *testing.T) {
	t.Parallel()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("x-api-key") != "secret-key" {
			t.Errorf("x-api-key = %q", r.Header.Get("x-api-key"))
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"type":"error","error":{"ref_id":"ref-1","message":"Run id not found","detail":{"run_id":"x"}}}`)
	}))
	defer ts.Close()
	c := testClient(ts.URL)
	_, err := c.GetRun(context.Background(), "x")
	var ae *Error
	if !errors.As(err, &ae) || !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %#v", err)
	}
	if ae.Message != "Run id not found" || ae.RefID != "ref-1" || ae.Detail["run_id"] != "x" {
		t.Errorf("error = %+v", ae)
	}
	if n := c.RequestCounts()["GET /v1/tasks/runs/{run_id}"]; n != 1 {
		t.Errorf("404 was sent %d times", n)
	}
}

func TestClient_Retries(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var mu sync.Mutex
	status := map[string][]int{} // path -> statuses to answer in turn
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		mu.Lock()
		q := status[r.URL.Path]
		code := 200
		if len(q) > 0 {
			code, status[r.URL.Path] = q[0], q[1:]
		}
		mu.Unlock()
		w.Header().Set("retry-after-ms", "1")
		w.WriteHeader(code)
		if code == 200 {
			if strings.HasSuffix(r.URL.Path, "/runs") {
				io.WriteString(w, `{"status":{},"run_ids":[]}`)
			} else {
				io.WriteString(w, `{"run_id":"trun_1","status":"queued"}`)
			}
		} else {
			io.WriteString(w, "plain text failure")
		}
	}))
	defer ts.Close()
	ctx := context.Background()
	cases := []struct {
		name     string
		path     string
		statuses []int
		call     func(c *Client) error
		wantErr  error
		attempts int64
	}{
		{"get retries 5xx", "/v1/tasks/runs/a", []int{503, 502, 500},
			func(c *Client) error { _, err := c.GetRun(ctx, "a"); return err }, nil, 4},
		{"get gives up", "/v1/tasks/runs/b", []int{500, 500, 500, 500, 500},
			func(c *Client) error { _, err := c.GetRun(ctx, "b"); return err }, ErrInternal, 4},
		{"add-runs not retried on 500", "/v1/tasks/groups/g/runs", []int{500},
			func(c *Client) error { _, err := c.AddRuns(ctx, "g", TaskGroupRunRequest{}); return err },
			ErrInternal, 1},
		{"add-runs retried on 429", "/v1/tasks/groups/h/runs", []int{429, 503},
			func(c *Client) error { _, err := c.AddRuns(ctx, "h", TaskGroupRunRequest{}); return err },
			nil, 3},
		{"408 is an answer", "/v1/tasks/runs/c/result", []int{408},
			func(c *Client) error { _, err := c.GetRunResult(ctx, "c", 0); return err }, ErrTimeout, 1},
		{"422 not retried", "/v1/tasks/runs", []int{422},
			func(c *Client) error { _, err := c.CreateRun(ctx, TaskRunInput{}); return err }, ErrInvalid, 1},
	}
	for _, tc := range cases {
		mu.Lock()
		status[tc.path] = tc.statuses
		mu.Unlock()
		before := calls.Load()
		err := tc.call(testClient(ts.URL))
		if (tc.wantErr == nil) != (err == nil) || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.wantErr)
		}
		if n := calls.Load() - before; n != tc.attempts {
			t.Errorf("%s: %d attempts, want %d", tc.name, n, tc.attempts)
		}
	}
}

func TestClient_RetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		h    http.Header
		want time.Duration
	}{
		{http.Header{"Retry-After": {"2"}}, 2 * time.Second},
		{http.Header{"Retry-After-Ms": {"250"}}, 250 * time.Millisecond},
		{http.Header{"Retry-After": {now.Add(3 * time.Second).Format(http.TimeFormat)}}, 3 * time.Second},
		{http.Header{"Retry-After": {"soon"}}, 0},
		{http.Header{"Retry-After": {"100000"}}, maxRetryAfter},
	} {
		if got := retryAfter(tc.h, now); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.h, got, tc.want)
		}
	}
}

func TestClient_RefusedPostIsRetried(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connections are refused
	c := testClient("http://" + addr)
	_, err = c.CreateTaskGroup(context.Background(), CreateTaskGroupRequest{})
	if err == nil {
		t.Fatal("no error from a closed port")
	}
	if n := c.TotalRequests(); n != 4 {
		t.Errorf("%d attempts at a refused POST, want 4", n)
	}
}

// groupEventsServer serves scripted group event streams: the first
// connection sends one event and breaks off, the second ends the group.
func TestClient_GroupEventsResume(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var cursors []string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		cursors = append(cursors, r.URL.Query().Get("last_event_id"))
		n := len(cursors)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		switch n {
		case 1:
			fmt.Fprint(w, "event: task_group_status\ndata: {\"type\":\"task_group_status\",\"event_id\":\"1\",\"status\":{\"is_active\":true}}\n\n")
			fmt.Fprint(w, "event: task_run.state\ndata: {\"type\":\"task_run.state\",\"event_id\":\"2\",\"run\":{\"run_id\":\"r1\"}}\n\n")
			fmt.Fprint(w, "event: task_run.state\ndata: {\"type\":\"task_run.st") // cut mid-event
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case 2:
			// A clean close while still active: the client resumes again.
			fmt.Fprint(w, ": keepalive\n\n")
		default:
			fmt.Fprint(w, "event: task_run.state\ndata: {\"type\":\"task_run.state\",\"event_id\":\"3\",\"run\":{\"run_id\":\"r2\"}}\n\n")
			fmt.Fprint(w, "event: task_group_status\ndata: {\"type\":\"task_group_status\",\"event_id\":\"4\",\"status\":{\"is_active\":false}}\n\n")
		}
	}))
	defer ts.Close()
	c := testClient(ts.URL)
	var ids []string
	err := c.GroupEvents(context.Background(), "tgrp_1", GroupEventsQuery{LastEventID: "0"},
		func(ev Event) error {
			switch e := ev.(type) {
			case *TaskGroupStatusEvent:
				ids = append(ids, e.EventID)
			case *TaskRunEvent:
				ids = append(ids, *e.EventID)
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ids, ","); got != "1,2,3,4" {
		t.Errorf("events %s, want 1,2,3,4", got)
	}
	if got := strings.Join(cursors, ","); got != "0,2,2" {
		t.Errorf("cursors sent %s, want 0,2,2", got)
	}
	if n := c.RequestCounts()["GET /v1/tasks/groups/{taskgroup_id}/events"]; n != 3 {
		t.Errorf("counted %d requests", n)
	}
}
