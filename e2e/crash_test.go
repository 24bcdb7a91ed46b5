package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

// crashProcessors configures synthetic with a latency spread, 500 runs at
// a time and a cap on how many runs start per minute.
const crashProcessors = `version: 1
processors:
  synthetic:
    kind: synthetic
    concurrency: 500
    rate_per_minute: %d
    timeout: 30s
    max_attempts: 3
    options:
      latency: {distribution: uniform, min: %s, max: %s}
`

// crashSpec is the default task spec of the crash tests' runs.
var crashSpec = &api.TaskSpec{OutputSchema: api.Schema{Type: api.SchemaJSON,
	JSONSchema: json.RawMessage(`{"type":"object","properties":{
		"ceo":{"type":"string"},"employees":{"type":"integer"}},
		"required":["ceo","employees"],"additionalProperties":false}`)}}

const (
	crashBatches  = 10
	crashPerBatch = 1000
)

// crashSetup writes the processor file and returns the binary, the temp
// dir, the database path and the serve arguments.
func crashSetup(t *testing.T, ratePerMinute int, minLatency, maxLatency string) (bin, dir, db string, args []string) {
	t.Helper()
	bin = taskpipeBinary(t)
	dir = t.TempDir()
	db = filepath.Join(dir, "taskpipe.db")
	procs := filepath.Join(dir, "processors.yaml")
	if err := os.WriteFile(procs, []byte(fmt.Sprintf(crashProcessors, ratePerMinute, minLatency, maxLatency)), 0o600); err != nil {
		t.Fatal(err)
	}
	return bin, dir, db, []string{"--db", db, "--processors", procs, "--node", "e2e-node", "--dev"}
}

// batchInputs returns the inputs of add-runs call b.
func batchInputs(b int) []api.TaskRunInput {
	in := make([]api.TaskRunInput, crashPerBatch)
	for i := range in {
		in[i] = api.TaskRunInput{
			Input:     json.RawMessage(fmt.Sprintf(`{"company":"Company %d-%d"}`, b, i)),
			Processor: "synthetic",
			Metadata:  api.Metadata{"batch": float64(b), "row": float64(i)},
		}
	}
	return in
}

// client returns a Go API client that does not retry, so that a call cut
// by a kill fails rather than waits for the restart.
func client(p *serverProcess) *api.Client {
	return api.NewClient(p.URL, "dev-key", api.WithRetries(0, time.Millisecond, time.Millisecond))
}

// snapshotRuns reads every run of the group straight from the database
// file, keyed by run id.
func snapshotRuns(t *testing.T, db, groupID string) (store.Group, map[string]store.Run) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	g, err := st.GetGroup(ctx, groupID)
	if err != nil {
		t.Fatal(err)
	}
	runs := make(map[string]store.Run)
	var after int64
	for {
		page, err := st.ListRuns(ctx, groupID, after, "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return g, runs
		}
		for _, r := range page {
			runs[r.ID] = r
			after = r.Seq
		}
	}
}

// allEvents reads the group's whole event stream after lastEventID until
// it ends (the group inactive and its log sent).
func allEvents(t *testing.T, p *serverProcess, groupID, lastEventID string) []sseEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	q := url.Values{"last_event_id": {lastEventID}}
	var evs []sseEvent
	err := readStream(ctx, p.URL+"/v1/tasks/groups/"+groupID+"/events?"+q.Encode(),
		func(ev sseEvent) bool { evs = append(evs, ev); return true })
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// checkCursors checks that events carry the cursors from+1, from+2, ...
// with no gap or repeat, and that the stream ended on an inactive status.
func checkCursors(t *testing.T, evs []sseEvent, from int) {
	t.Helper()
	for i, ev := range evs {
		if ev.EventID != strconv.Itoa(from+i+1) {
			t.Fatalf("event %d has event_id %q, want %d (gap or repeat)", i, ev.EventID, from+i+1)
		}
		if ev.Name != ev.Type {
			t.Fatalf("event %d: event: %s but type %s", i, ev.Name, ev.Type)
		}
	}
	if len(evs) == 0 {
		t.Fatal("no events")
	}
	if last := evs[len(evs)-1]; last.Type != string(api.EventGroupStatus) || last.Status.IsActive {
		t.Fatalf("stream ended on %s", last.Data)
	}
}

// completedOnce checks that the events report each run's completion
// exactly once and name no run outside ids.
func completedOnce(t *testing.T, evs []sseEvent, ids []string) {
	t.Helper()
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	seen := make(map[string]int, len(ids))
	for _, ev := range evs {
		if ev.Type != string(api.EventRunState) {
			continue
		}
		if !want[ev.Run.RunID] || ev.Run.Status != string(api.StatusCompleted) {
			t.Fatalf("unexpected run event %s", ev.Data)
		}
		seen[ev.Run.RunID]++
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Fatalf("run %s completed %d times in the event log, want once", id, seen[id])
		}
	}
}

func TestCrash_KillMidRun(t *testing.T) {
	t.Parallel()
	// Runs take 0.5-1.5 s and at most 250 start a second: 10,000 runs take
	// 40 s however fast the machine is, a kill after a few thousand
	// completions lands mid-way even when the adds are slow, and a few
	// hundred runs are executing when it lands.
	bin, dir, db, args := crashSetup(t, 15000, "500ms", "1500ms")
	ctx := context.Background()
	start := time.Now()
	first := startServer(t, bin, dir, args...)
	c := client(first)

	// Add 10,000 runs in ten calls; keep every id the server accepted.
	g, err := c.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{Metadata: api.Metadata{"test": "crash"}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for b := range crashBatches {
		resp, err := c.AddRuns(ctx, g.TaskGroupID, api.TaskGroupRunRequest{Inputs: batchInputs(b),
			DefaultTaskSpec: crashSpec})
		if err != nil {
			t.Fatalf("add-runs call %d: %v", b, err)
		}
		ids = append(ids, resp.RunIDs...)
	}

	// Follow the events; kill -9 once they reported 1,000 completions and
	// the group 2,000 (the stream may lag), and keep what the stream
	// delivered before it dropped.
	const killAfter = 2000
	var before []sseEvent
	var streamed atomic.Int64
	flowing := make(chan struct{})
	streamDone := make(chan error, 1)
	go func() {
		streamDone <- readStream(ctx, first.URL+"/v1/tasks/groups/"+g.TaskGroupID+"/events",
			func(ev sseEvent) bool {
				if len(before) == 0 {
					close(flowing)
				}
				before = append(before, ev)
				if ev.Type == string(api.EventRunState) {
					streamed.Add(1)
				}
				return true
			})
	}()
	select {
	case <-flowing:
	case err := <-streamDone:
		t.Fatalf("the event stream ended before its first event: %v", err)
	}
	t.Logf("%v: %d runs added; events flow", time.Since(start), len(ids))
	for {
		st, err := c.GetTaskGroup(ctx, g.TaskGroupID)
		if err != nil {
			t.Fatal(err)
		}
		if n := st.Status.TaskRunStatusCounts[api.StatusCompleted]; n >= killAfter &&
			streamed.Load() >= killAfter/2 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	first.kill(t)
	err = <-streamDone
	if len(before) == 0 || err == nil {
		t.Fatalf("the stream ended with %v after %d events; want a cut connection", err, len(before))
	}
	t.Logf("%v: killed; %d events streamed before the kill; the stream ended with %v",
		time.Since(start), len(before), err)

	// What the dead server left in its database file.
	snapGroup, snap := snapshotRuns(t, db, g.TaskGroupID)
	doneBefore := make(map[string]store.Run)
	for id, r := range snap {
		if r.Status == api.StatusCompleted {
			doneBefore[id] = r
		}
	}
	if snapGroup.NumRuns != crashBatches*crashPerBatch || len(snap) != len(ids) {
		t.Fatalf("after the kill: %d runs in the group, %d stored, %d accepted",
			snapGroup.NumRuns, len(snap), len(ids))
	}
	running := snapGroup.Counts[api.StatusRunning]
	if len(doneBefore) < killAfter || len(doneBefore) == len(ids) || running == 0 {
		t.Fatalf("after the kill %d of %d runs were completed and %d running: "+
			"the kill did not land mid-way", len(doneBefore), len(ids), running)
	}
	for _, ev := range before {
		if ev.Type == string(api.EventRunState) {
			if _, ok := doneBefore[ev.Run.RunID]; !ok {
				t.Fatalf("run %s was reported completed but is %s in the database",
					ev.Run.RunID, snap[ev.Run.RunID].Status)
			}
		}
	}
	t.Logf("%v: %d runs completed before the kill, %d running, %d not yet", time.Since(start),
		len(doneBefore), running, len(ids)-len(doneBefore))

	// Restart on the same file and read the whole event log.
	second := startServer(t, bin, dir, args...)
	c = client(second)
	evs := allEvents(t, second, g.TaskGroupID, "")
	t.Logf("%v: restarted and read %d events", time.Since(start), len(evs))
	checkCursors(t, evs, 0)
	if len(evs) < len(before) {
		t.Fatalf("%d events after the restart, fewer than the %d seen before", len(evs), len(before))
	}
	for i := range before {
		if before[i].Name != evs[i].Name || before[i].Data != evs[i].Data {
			t.Fatalf("event %d changed across the restart:\nbefore %s\nafter  %s", i, before[i].Data, evs[i].Data)
		}
	}
	completedOnce(t, evs, ids)
	last := evs[len(evs)-1].Status
	if last.NumTaskRuns != int64(len(ids)) || last.Counts[string(api.StatusCompleted)] != int64(len(ids)) {
		t.Fatalf("final status %+v", last)
	}

	// Resuming from the last event seen before the kill continues there.
	cut := len(before)
	rest := allEvents(t, second, g.TaskGroupID, before[cut-1].EventID)
	checkCursors(t, rest, cut)
	if len(rest) != len(evs)-cut || rest[0].Data != evs[cut].Data {
		t.Fatalf("resume after %s: %d events, want %d", before[cut-1].EventID, len(rest), len(evs)-cut)
	}

	// Every accepted run exists and completed; those completed before the
	// kill kept their output and timestamps.
	gr, err := c.GetTaskGroup(ctx, g.TaskGroupID)
	if err != nil || gr.Status.NumTaskRuns != int64(len(ids)) || gr.Status.IsActive ||
		gr.Status.TaskRunStatusCounts[api.StatusCompleted] != int64(len(ids)) {
		t.Fatalf("group after restart %+v, %v", gr.Status, err)
	}
	got := make(map[string]*api.TaskRunEvent, len(ids))
	err = c.GroupRuns(ctx, g.TaskGroupID, api.GroupRunsQuery{IncludeOutput: true},
		func(ev *api.TaskRunEvent) error { got[ev.Run.RunID] = ev; return nil })
	if err != nil || len(got) != len(ids) {
		t.Fatalf("group runs: %d, %v", len(got), err)
	}
	for _, id := range ids {
		ev, ok := got[id]
		if !ok || ev.Run.Status != api.StatusCompleted || ev.Output == nil {
			t.Fatalf("accepted run %s after restart: %+v", id, ev)
		}
		r, wasDone := doneBefore[id]
		if !wasDone {
			continue
		}
		if *ev.Run.ModifiedAt != api.Timestamp(r.ModifiedAt) {
			t.Fatalf("run %s modified_at %s, was %s before the kill", id, *ev.Run.ModifiedAt,
				api.Timestamp(r.ModifiedAt))
		}
		var stored api.Output
		if err := json.Unmarshal(r.Output, &stored); err != nil {
			t.Fatal(err)
		}
		if !sameJSON(t, stored.Content, ev.Output.Content) || len(stored.Basis) != len(ev.Output.Basis) {
			t.Fatalf("run %s output changed: %s, was %s", id, ev.Output.Content, stored.Content)
		}
	}

	// After a clean stop the database shows no re-execution of those runs.
	second.stop(t)
	_, final := snapshotRuns(t, db, g.TaskGroupID)
	rerun := 0
	for id, r := range final {
		b, wasDone := doneBefore[id]
		if !wasDone {
			if r.Attempt > 1 {
				rerun++
			}
			continue
		}
		if r.Attempt != b.Attempt || !r.FinishedAt.Equal(b.FinishedAt) ||
			!r.ModifiedAt.Equal(b.ModifiedAt) || string(r.Output) != string(b.Output) {
			t.Fatalf("run %s completed before the kill was touched: attempt %d->%d, finished %v->%v",
				id, b.Attempt, r.Attempt, b.FinishedAt, r.FinishedAt)
		}
	}
	t.Logf("%v: %d events in all; %d runs executed again after recovery (running at the kill)",
		time.Since(start), len(evs), rerun)
}

func TestCrash_KillDuringAdd(t *testing.T) {
	t.Parallel()
	bin, dir, db, args := crashSetup(t, 120000, "0s", "50ms")
	ctx := context.Background()
	first := startServer(t, bin, dir, args...)
	c := client(first)
	g, err := c.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{})
	if err != nil {
		t.Fatal(err)
	}

	// Add batches back to back; kill -9 as soon as three were accepted,
	// while the fourth is on its way.
	acked := make(chan []string, crashBatches)
	addsDone := make(chan error, 1)
	go func() {
		defer close(acked)
		for b := range crashBatches {
			resp, err := c.AddRuns(ctx, g.TaskGroupID, api.TaskGroupRunRequest{Inputs: batchInputs(b),
				DefaultTaskSpec: crashSpec})
			if err != nil {
				addsDone <- err
				return
			}
			acked <- resp.RunIDs
		}
		addsDone <- nil
	}()
	var ids []string
	for range 3 {
		ids = append(ids, <-acked...)
	}
	first.kill(t)
	for batch := range acked {
		ids = append(ids, batch...)
	}
	if err := <-addsDone; err == nil {
		t.Fatal("every add-runs call succeeded: the kill did not land during the adds")
	}
	accepted := len(ids) / crashPerBatch
	t.Logf("%d add-runs calls accepted before the kill", accepted)

	// After a restart each batch is wholly there or wholly absent, and
	// every accepted one is there.
	second := startServer(t, bin, dir, args...)
	c = client(second)
	evs := allEvents(t, second, g.TaskGroupID, "")
	checkCursors(t, evs, 0)
	gr, err := c.GetTaskGroup(ctx, g.TaskGroupID)
	if err != nil {
		t.Fatal(err)
	}
	n := gr.Status.NumTaskRuns
	if n != int64(accepted*crashPerBatch) && n != int64((accepted+1)*crashPerBatch) {
		t.Fatalf("%d runs after the restart; %d batches of %d were accepted", n, accepted, crashPerBatch)
	}
	perBatch := make(map[int]int)
	var present []string
	err = c.GroupRuns(ctx, g.TaskGroupID, api.GroupRunsQuery{}, func(ev *api.TaskRunEvent) error {
		if ev.Run.Status != api.StatusCompleted {
			return fmt.Errorf("run %s is %s", ev.Run.RunID, ev.Run.Status)
		}
		perBatch[int(ev.Run.Metadata["batch"].(float64))]++
		present = append(present, ev.Run.RunID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for b, count := range perBatch {
		if count != crashPerBatch || b >= accepted+1 {
			t.Fatalf("batch %d has %d runs after the restart, want all %d or none", b, count, crashPerBatch)
		}
	}
	if !reflect.DeepEqual(present[:len(ids)], ids) {
		t.Fatal("the accepted run ids are not the group's first runs, in order")
	}
	completedOnce(t, evs, present)
	second.stop(t)
	if g, _ := snapshotRuns(t, db, g.TaskGroupID); g.NumRuns != n {
		t.Fatalf("database holds %d runs, the API said %d", g.NumRuns, n)
	}
}

// sameJSON reports whether a and b hold the same JSON value.
func sameJSON(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}
