package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
)

// frames splits an SSE body into its frames, checking that each is exactly
// an event line and one data line of JSON whose type is the event name.
func frames(t *testing.T, body string) []map[string]any {
	t.Helper()
	if strings.Contains(body, "\nid:") || strings.HasPrefix(body, "id:") || strings.Contains(body, "retry:") {
		t.Errorf("stream has id or retry lines: %q", body)
	}
	var out []map[string]any
	for _, f := range strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		f = strings.TrimLeft(f, "\n") // the tail of a frame read before
		if f == "" || strings.HasPrefix(f, ":") {
			continue
		}
		lines := strings.Split(f, "\n")
		name, ok := strings.CutPrefix(lines[0], "event: ")
		if len(lines) != 2 || !ok || !strings.HasPrefix(lines[1], "data: {") {
			t.Fatalf("frame %q", f)
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[1], "data: ")), &ev); err != nil {
			t.Fatal(err)
		}
		if ev["type"] != name {
			t.Errorf("event %s carries type %v", name, ev["type"])
		}
		out = append(out, ev)
	}
	return out
}

func TestServer_SSEFraming(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	gid := s.createGroup(t, "k")
	// "hold" takes one run at a time and keeps it: the first run is
	// running, the other nine stay queued.
	ids := s.addRuns(t, "k", gid, "hold", 10)
	waitFor(t, "one held run", func() bool { return s.hold.held() == 1 })
	g := s.group(t, gid)
	if g.Status.TaskRunStatusCounts[api.StatusRunning] != 1 || g.Status.TaskRunStatusCounts[api.StatusQueued] != 9 {
		t.Fatalf("status counts %v", g.Status.TaskRunStatusCounts)
	}

	code, h, b := do(t, "GET", s.ts.URL+"/v1beta/tasks/groups/"+gid+
		"/runs?status=queued&include_input=true&last_event_id=7", "k", "")
	if code != 200 {
		t.Fatalf("status %d: %s", code, b)
	}
	if h.Get("Content-Type") != "text/event-stream" || h.Get("Cache-Control") != "no-cache" {
		t.Errorf("headers %v", h)
	}
	evs := frames(t, string(b))
	if len(evs) != 3 {
		t.Fatalf("%d frames in %q, want runs 8-10", len(evs), b)
	}
	for i, ev := range evs {
		for _, k := range []string{"type", "event_id", "input", "run", "output"} {
			if _, ok := ev[k]; !ok {
				t.Errorf("frame %d lacks %s", i, k)
			}
		}
		run := ev["run"].(map[string]any)
		in, _ := ev["input"].(map[string]any)
		want := 7 + i
		if ev["type"] != "task_run.state" || ev["event_id"] != itoa(want+1) || run["run_id"] != ids[want] ||
			run["status"] != "queued" || ev["output"] != nil || in == nil || in["input"] != "row "+itoa(want) {
			t.Errorf("frame %d = %v", i, ev)
		}
	}
}

func TestServer_StreamErrors(t *testing.T) {
	t.Parallel()
	s := newStack(t)

	// Before the first event: a JSON reply with the error's status.
	code, h, b := do(t, "GET", s.ts.URL+"/v1/tasks/groups/tgrp_404/runs", "k", "")
	if code != 404 {
		t.Fatalf("status %d", code)
	}
	errorReply(t, h, b)
	gid := s.createGroup(t, "k")
	s.addRuns(t, "k", gid, "hold", 1)
	code, h, b = do(t, "GET", s.ts.URL+"/v1/tasks/groups/"+gid+"/events?last_event_id=999", "k", "")
	if code != 422 || !strings.Contains(errorReply(t, h, b)["message"].(string), "last_event_id: unknown cursor") {
		t.Fatalf("unknown cursor: %d %s", code, b)
	}

	// After it: a final error event. The store fails under an open stream.
	resp := openStream(t, context.Background(), s.ts.URL+"/v1/tasks/groups/"+gid+"/events")
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	if err != nil || first != "event: task_group_status\n" {
		t.Fatalf("first line %q, %v", first, err)
	}
	if err := s.store.Close(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	var got []api.Event
	if err := api.ReadEvents(strings.NewReader(first+string(rest)), func(ev api.Event) error {
		got = append(got, ev)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) < 2 {
		t.Fatalf("%d events in %q", len(got), rest)
	}
	ee, ok := got[len(got)-1].(*api.ErrorEvent)
	if !ok || ee.Error.Message != "internal server error" || len(ee.Error.RefID) != 36 {
		t.Fatalf("last event %#v", got[len(got)-1])
	}
	if !strings.Contains(s.logs.String(), ee.Error.RefID) {
		t.Errorf("ref_id %s is not in the log", ee.Error.RefID)
	}
	if st := got[0].(*api.TaskGroupStatusEvent).Status; st.TaskRunStatusCounts == nil || st.NumTaskRuns != 1 {
		t.Errorf("first status %+v", st)
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

// readFrame reads lines up to the end of the next frame that is not a
// keep-alive, and reports how many keep-alives came before it.
func readFrame(t *testing.T, br *bufio.Reader) (frame string, keepalives int) {
	t.Helper()
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read stream: %q, %v", b.String()+line, err)
		}
		switch {
		case line == ": keepalive\n" && b.Len() == 0:
			keepalives++
		case line == "\n" && b.Len() == 0:
		case line == "\n":
			return b.String(), keepalives
		default:
			b.WriteString(line)
		}
	}
}

func TestServer_KeepaliveAndClose(t *testing.T) {
	t.Parallel()
	s := newStack(t, func(o *Options) { o.Keepalive = 5 * time.Millisecond })
	gid := s.createGroup(t, "k")
	runID := s.addRuns(t, "k", gid, "hold", 1)[0]
	waitFor(t, "the held run", func() bool { return s.hold.held() == 1 })

	// The stream sends the log so far; while the group idles it sends
	// keep-alives; the run's completion and the final status end it.
	resp := openStream(t, context.Background(), s.ts.URL+"/v1/tasks/groups/"+gid+"/events?timeout=30")
	br := bufio.NewReader(resp.Body)
	f, _ := readFrame(t, br)
	if !strings.HasPrefix(f, "event: task_group_status\ndata: {") {
		t.Fatalf("first frame %q", f)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == ": keepalive\n" {
			break
		}
	}
	s.hold.release()
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	evs := frames(t, string(rest))
	if len(evs) < 2 {
		t.Fatalf("rest of stream %q", rest)
	}
	done, last := evs[len(evs)-2], evs[len(evs)-1]
	if done["type"] != "task_run.state" || done["run"].(map[string]any)["run_id"] != runID ||
		last["type"] != "task_group_status" || last["status"].(map[string]any)["is_active"] != false {
		t.Fatalf("last events %v %v", done, last)
	}

	// A stream's timeout query ends it while the group is still active.
	s2 := newStack(t, func(o *Options) { o.Keepalive = time.Hour })
	gid2 := s2.createGroup(t, "k")
	s2.addRuns(t, "k", gid2, "hold", 1)
	start := time.Now()
	code, _, b := do(t, "GET", s2.ts.URL+"/v1/tasks/groups/"+gid2+"/events?timeout=0.3", "k", "")
	if code != 200 || time.Since(start) < 300*time.Millisecond || !s2.group(t, gid2).Status.IsActive {
		t.Fatalf("timed stream: %d after %v: %q", code, time.Since(start), b)
	}
	if evs := frames(t, string(b)); len(evs) == 0 || evs[len(evs)-1]["type"] != "task_group_status" {
		t.Fatalf("timed stream %q", b)
	}

	// A run's stream: its state, the progress so far, then live the final
	// state with the output.
	sr := newStack(t)
	runID2 := sr.createRun(t, "hold")
	waitFor(t, "the held run", func() bool { return sr.hold.held() == 1 })
	rresp := openStream(t, context.Background(), sr.ts.URL+"/v1/tasks/runs/"+runID2+"/events")
	if rresp.StatusCode != 200 {
		t.Fatalf("run events: %d", rresp.StatusCode)
	}
	rbr := bufio.NewReader(rresp.Body)
	state, _ := readFrame(t, rbr)
	plan, _ := readFrame(t, rbr)
	if !strings.HasPrefix(state, "event: task_run.state\n") ||
		!strings.HasPrefix(plan, "event: task_run.progress_msg.plan\n") || !strings.Contains(plan, "holding "+runID2) {
		t.Fatalf("run stream began %q %q", state, plan)
	}
	sr.hold.release()
	rrest, _ := io.ReadAll(rbr)
	revs := frames(t, string(rrest))
	if len(revs) != 1 || revs[0]["run"].(map[string]any)["status"] != "completed" || revs[0]["output"] == nil {
		t.Fatalf("run stream ended with %q", rrest)
	}

	// CloseStreams: a stream that sent nothing gets a 503; a waiting
	// result call too.
	s3 := newStack(t, func(o *Options) { o.Keepalive = time.Hour })
	gid3 := s3.createGroup(t, "k")
	s3.addRuns(t, "k", gid3, "hold", 1)
	waitFor(t, "the held run", func() bool { return s3.hold.held() == 1 })
	held := s3.createRun(t, "hold") // queued behind the first: hold takes one run
	stored, err := s3.store.GetGroup(context.Background(), gid3)
	if err != nil || stored.LastEventSeq == 0 {
		t.Fatalf("stored group %+v, %v", stored, err)
	}
	cursor := strconv.FormatInt(stored.LastEventSeq, 10)
	type reply struct {
		code int
		body string
	}
	get := func(path string) chan reply {
		c := make(chan reply, 1)
		go func() {
			resp, err := http.Get(s3.ts.URL + path)
			if err != nil {
				c <- reply{0, err.Error()}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			c <- reply{resp.StatusCode, string(b)}
		}()
		return c
	}
	waiting := get("/v1/tasks/groups/" + gid3 + "/events?last_event_id=" + cursor)
	result := get("/v1/tasks/runs/" + held + "/result?timeout=600")
	waitFor(t, "the stream to open", func() bool {
		return s3.metricValue(t, `taskpipe_sse_clients{route="GET /v1/tasks/groups/{taskgroup_id}/events"}`) == "1"
	})
	waitFor(t, "the result call to wait", func() bool { return s3.spy.lastTimeout() == 600*time.Second })
	s3.srv.CloseStreams()
	for name, c := range map[string]chan reply{"stream": waiting, "result": result} {
		select {
		case got := <-c:
			if got.code != http.StatusServiceUnavailable || !strings.Contains(got.body, "shutting down") {
				t.Errorf("%s after CloseStreams: %d %q, want 503", name, got.code, got.body)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not end after CloseStreams", name)
		}
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}
