package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
	"github.com/taskpipe/taskpipe/processors"
	"github.com/taskpipe/taskpipe/server"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

// startStack runs a real engine on SQLite in a temp dir with the synthetic
// processor behind a Server with two keys, and returns its URL.
func startStack(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "taskpipe.db"))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(engine.Options{Store: st, Backends: processors.Default(nil), Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	keys := &server.Keyring{}
	for _, owner := range []string{"alice", "bob"} {
		if err := keys.Add(owner, owner+"-key"); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := server.New(server.Options{Service: eng, WithOwner: engine.WithOwner, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.CloseStreams()
		ts.Close()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := eng.Stop(sctx); err != nil {
			t.Error(err)
		}
		st.Close()
	})
	return ts.URL
}

func TestIntegration_GroupLifecycle(t *testing.T) {
	t.Parallel()
	url := startStack(t)
	ctx := context.Background()
	alice := api.NewClient(url, "alice-key")
	bob := api.NewClient(url, "bob-key")

	// Create a group and add runs.
	g, err := alice.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{Metadata: api.Metadata{"job": "t"}})
	if err != nil {
		t.Fatal(err)
	}
	inputs := make([]api.TaskRunInput, 25)
	for i := range inputs {
		inputs[i] = api.TaskRunInput{Input: json.RawMessage(`"row"`), Processor: "synthetic",
			Metadata: api.Metadata{"row": float64(i)}}
	}
	added, err := alice.AddRuns(ctx, g.TaskGroupID, api.TaskGroupRunRequest{Inputs: inputs})
	if err != nil {
		t.Fatal(err)
	}
	if len(added.RunIDs) != 25 || added.RunCursor != nil || added.EventCursor != nil {
		t.Fatalf("add-runs reply %+v", added)
	}

	// Watch events until the group is inactive.
	completed := 0
	var last *api.TaskGroupStatusEvent
	err = alice.GroupEvents(ctx, g.TaskGroupID, api.GroupEventsQuery{Timeout: time.Minute},
		func(ev api.Event) error {
			switch e := ev.(type) {
			case *api.TaskRunEvent:
				if e.Run.Status == api.StatusCompleted {
					completed++
				}
			case *api.TaskGroupStatusEvent:
				last = e
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if completed != 25 || last == nil || last.Status.IsActive || last.Status.TaskRunStatusCounts[api.StatusCompleted] != 25 {
		t.Fatalf("completed %d, last status %+v", completed, last)
	}

	// Read the runs back with outputs, and resume after the tenth.
	var runs []*api.TaskRunEvent
	err = alice.GroupRuns(ctx, g.TaskGroupID, api.GroupRunsQuery{IncludeInput: true, IncludeOutput: true},
		func(ev *api.TaskRunEvent) error { runs = append(runs, ev); return nil })
	if err != nil || len(runs) != 25 {
		t.Fatalf("runs %d, %v", len(runs), err)
	}
	if runs[0].Output == nil || runs[0].Input == nil || runs[0].Run.RunID != added.RunIDs[0] {
		t.Fatalf("first run event %+v", runs[0])
	}
	var rest int
	err = alice.GroupRuns(ctx, g.TaskGroupID, api.GroupRunsQuery{LastEventID: *runs[9].EventID,
		Status: api.StatusCompleted}, func(ev *api.TaskRunEvent) error { rest++; return nil })
	if err != nil || rest != 15 {
		t.Fatalf("resumed runs %d, %v", rest, err)
	}

	// Single-run calls.
	runID := added.RunIDs[3]
	if r, err := alice.GetGroupRun(ctx, g.TaskGroupID, runID); err != nil || r.Metadata["row"] != float64(3) {
		t.Fatalf("group run %+v, %v", r, err)
	}
	if in, err := alice.GetRunInput(ctx, runID); err != nil || in.Processor != "synthetic" {
		t.Fatalf("run input %+v, %v", in, err)
	}
	res, err := alice.GetRunResult(ctx, runID, 5*time.Second)
	if err != nil || res.Output.Type != api.OutputJSON || len(res.Output.Content) == 0 {
		t.Fatalf("result %+v, %v", res, err)
	}

	// Another owner sees nothing.
	if _, err := bob.GetTaskGroup(ctx, g.TaskGroupID); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("bob reads alice's group: %v", err)
	}
	if _, err := bob.GetRun(ctx, runID); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("bob reads alice's run: %v", err)
	}
	if err := bob.GroupRuns(ctx, g.TaskGroupID, api.GroupRunsQuery{},
		func(*api.TaskRunEvent) error { return nil }); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("bob streams alice's runs: %v", err)
	}
}

func TestIntegration_SingleRun(t *testing.T) {
	t.Parallel()
	url := startStack(t)
	ctx := context.Background()
	c := api.NewClient(url, "alice-key")
	run, err := c.CreateRun(ctx, api.TaskRunInput{Input: json.RawMessage(`{"company":"Acme"}`),
		Processor: "synthetic"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.GetRunResult(ctx, run.RunID, 30*time.Second)
	if err != nil || res.Run.Status != api.StatusCompleted {
		t.Fatalf("result %+v, %v", res, err)
	}
	var types []string
	var final *api.TaskRunEvent
	if err := c.RunEvents(ctx, run.RunID, func(ev api.Event) error {
		types = append(types, ev.EventType())
		if re, ok := ev.(*api.TaskRunEvent); ok {
			final = re
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(types) < 1 || types[0] != api.EventRunState || final == nil || final.Output == nil {
		t.Fatalf("run events %v, final %+v", types, final)
	}
	if _, err := c.CreateRun(ctx, api.TaskRunInput{Input: json.RawMessage(`"x"`),
		Processor: "ultra99"}); !errors.Is(err, api.ErrForbidden) {
		t.Errorf("unknown processor: %v", err)
	}
	if _, err := c.GetRunResult(ctx, "trun_missing", 0); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("missing run result: %v", err)
	}
	if _, err := c.CancelRun(ctx, run.RunID); err != nil && !errors.Is(err, api.ErrConflict) {
		t.Errorf("cancel of a completed run: %v", err)
	}
}

func TestIntegration_RawMalformed(t *testing.T) {
	t.Parallel()
	url := startStack(t)
	post := func(path, key, body string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", url+path, strings.NewReader(body))
		req.Header.Set("x-api-key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: body %q is not JSON", path, b)
		}
		return resp.StatusCode, m
	}
	code, body := post("/v1beta/tasks/groups", "alice-key", `{}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, body)
	}
	gid := body["taskgroup_id"].(string)
	for _, tc := range []struct {
		path, key, body string
		code            int
	}{
		{"/v1/tasks/groups/" + gid + "/runs", "alice-key", `{"inputs":[{"input":"x","processor":1}]}`, 422},
		{"/v1/tasks/groups/" + gid + "/runs", "alice-key", `{"inputs":[{"input":"x","processor":"nope"}]}`, 403},
		{"/v1/tasks/groups/" + gid + "/runs", "bob-key", `{"inputs":[{"input":"x","processor":"synthetic"}]}`, 404},
		{"/v1/tasks/groups/" + gid + "/runs", "", `{}`, 401},
		{"/v1/tasks/runs", "alice-key", `{"input":`, 422},
	} {
		code, body := post(tc.path, tc.key, tc.body)
		if code != tc.code || body["type"] != "error" {
			t.Errorf("%s %s: %d %v, want %d", tc.path, tc.body, code, body, tc.code)
		}
	}
}
