package storetest

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// eventMetadata decodes the metadata of an event's run input.
func eventMetadata(t *testing.T, r *store.Run) map[string]any {
	t.Helper()
	if len(r.Input) == 0 {
		return nil
	}
	var in struct {
		Metadata map[string]any `json:"metadata"`
	}
	if err := json.Unmarshal(r.Input, &in); err != nil {
		t.Fatalf("decode input of run %s in its event: %v", r.ID, err)
	}
	return in.Metadata
}

func testEventsRunFields(t *testing.T, open OpenFunc) {
	s := open(t)
	newGroup(t, s, "g1")
	runs := makeRuns("g1", "a", 3)
	runs[0].Input = json.RawMessage(`{"input":{"metadata":"not this"},"processor":"lite",` +
		`"metadata":{"row":1,"tag":"t"}}`)
	runs[0].Warnings = json.RawMessage(`[{"type":"warning","message":"w"}]`)
	runs[2].Input = json.RawMessage(`{"input":"row 3","processor":"lite","metadata":null}`)
	addRuns(t, s, "g1", runs)
	claim(t, s, "n1", 3, at(2))
	failure := json.RawMessage(`{"ref_id":"x","message":"boom","detail":null}`)
	f := completed("a-1", "n1", 5)
	f.Cached = true
	finish(t, s, f, store.Finish{RunID: "a-2", Node: "n1", Status: api.StatusFailed,
		Error: failure, At: at(6)}, completed("a-3", "n1", 7))

	// Each run state event reports its run's fields and metadata.
	evs := allEvents(t, s, "g1")
	if len(evs) != 5 {
		t.Fatalf("events = %v, want 5", eventSummary(evs))
	}
	a1, a2, a3 := evs[1].Run, evs[2].Run, evs[3].Run
	if a1 == nil || a2 == nil || a3 == nil {
		t.Fatalf("run state events without runs: %+v", evs[1:4])
	}
	if a1.ID != "a-1" || a1.GroupID != "g1" || a1.Seq != 1 || a1.Processor != "lite" ||
		a1.Status != api.StatusCompleted || !a1.Cached || a1.Attempt != 1 ||
		!a1.CreatedAt.Equal(at(1)) || !a1.ModifiedAt.Equal(at(5)) ||
		!a1.FinishedAt.Equal(at(5)) || !jsonEqual(a1.Warnings, runs[0].Warnings) {
		t.Errorf("a-1 in its event = %+v", a1)
	}
	want := map[string]any{"row": 1.0, "tag": "t"}
	if got := eventMetadata(t, a1); !reflect.DeepEqual(got, want) {
		t.Errorf("a-1 metadata in its event = %v, want %v", got, want)
	}
	if a2.Status != api.StatusFailed || !jsonEqual(a2.Error, failure) || a2.Cached ||
		eventMetadata(t, a2) != nil {
		t.Errorf("a-2 in its event = %s error %s cached %v metadata %v", a2.Status, a2.Error,
			a2.Cached, eventMetadata(t, a2))
	}
	if a3.Status != api.StatusCompleted || eventMetadata(t, a3) != nil {
		t.Errorf("a-3 in its event = %s metadata %v", a3.Status, eventMetadata(t, a3))
	}
}
