package storetest

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

func testCreateGroup(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	want := store.Group{ID: "g1", Owner: "owner-1",
		Metadata:  api.Metadata{"team": "data", "priority": 2.0, "nightly": true},
		CreatedAt: at(0), ModifiedAt: at(0)}
	if err := s.CreateGroup(ctx, want); err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	got := getGroup(t, s, "g1")
	if got.ID != want.ID || got.Owner != want.Owner {
		t.Errorf("group = %s/%s, want %s/%s", got.ID, got.Owner, want.ID, want.Owner)
	}
	if !reflect.DeepEqual(got.Metadata, want.Metadata) {
		t.Errorf("metadata = %v, want %v", got.Metadata, want.Metadata)
	}
	if !got.CreatedAt.Equal(want.CreatedAt) || !got.ModifiedAt.Equal(want.ModifiedAt) {
		t.Errorf("times = %v/%v, want %v", got.CreatedAt, got.ModifiedAt, want.CreatedAt)
	}
	if got.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt location = %v, want UTC", got.CreatedAt.Location())
	}
	if got.NumRuns != 0 || got.LastRunSeq != 0 || got.LastEventSeq != 0 || len(got.Counts) != 0 {
		t.Errorf("new group summary = %d runs, seqs %d/%d, counts %v; want all zero",
			got.NumRuns, got.LastRunSeq, got.LastEventSeq, got.Counts)
	}
	if got.Active() {
		t.Error("empty group is active")
	}
	if evs := allEvents(t, s, "g1"); len(evs) != 0 {
		t.Errorf("new group has events %v", eventSummary(evs))
	}
}

func testCreateGroupDuplicate(t *testing.T, open OpenFunc) {
	s := open(t)
	newGroup(t, s, "g1")
	addRuns(t, s, "g1", makeRuns("g1", "r", 2))
	err := s.CreateGroup(context.Background(), store.Group{ID: "g1", Owner: "someone-else",
		CreatedAt: at(5)})
	if err == nil {
		t.Fatal("second CreateGroup with the same id succeeded")
	}
	g := getGroup(t, s, "g1")
	if g.Owner != "owner-1" || g.NumRuns != 2 {
		t.Errorf("group after failed duplicate = owner %s, %d runs; want owner-1, 2",
			g.Owner, g.NumRuns)
	}
}

func testNotFound(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	_, err := s.GetGroup(ctx, "nope")
	wantNotFound(t, "GetGroup", err)
	_, err = s.GetRun(ctx, "nope")
	wantNotFound(t, "GetRun", err)
	_, err = s.AddRuns(ctx, "nope", makeRuns("nope", "r", 2), bothSpecs())
	wantNotFound(t, "AddRuns", err)
	_, err = s.ListRuns(ctx, "nope", 0, "", 10)
	wantNotFound(t, "ListRuns", err)
	_, err = s.ListEvents(ctx, "nope", 0, 10)
	wantNotFound(t, "ListEvents", err)
	_, err = s.CancelRuns(ctx, "nope", nil, at(1))
	wantNotFound(t, "CancelRuns", err)
	err = s.SaveCheckpoint(ctx, "nope", []byte(`{"a":1}`))
	wantNotFound(t, "SaveCheckpoint", err)
	err = s.UpdateDelivery(ctx, store.Delivery{ID: "nope", NextAt: at(1)}, false)
	wantNotFound(t, "UpdateDelivery", err)
	err = s.UpdateDelivery(ctx, store.Delivery{ID: "nope"}, true)
	wantNotFound(t, "UpdateDelivery delivered", err)

	// The failed AddRuns stored nothing under the run ids.
	_, err = s.GetRun(ctx, "r-1")
	wantNotFound(t, "GetRun after failed AddRuns", err)
}

func testAddRunsSeqsAndCounts(t *testing.T, open OpenFunc) {
	s := open(t)
	newGroup(t, s, "g1")

	// The first batch starts both cursors at zero.
	first := makeRuns("g1", "a", 3)
	first[1].Status = api.StatusCompleted // ignored: runs are stored queued
	first[1].Attempt = 4
	res := addRuns(t, s, "g1", first)
	if res.PrevRunSeq != 0 || res.PrevEventSeq != 0 {
		t.Errorf("first batch prev cursors = %d/%d, want 0/0", res.PrevRunSeq, res.PrevEventSeq)
	}
	if res.Group.LastRunSeq != 3 || res.Group.LastEventSeq != 1 || res.Group.ID != "g1" {
		t.Errorf("first batch group = %s seqs %d/%d, want g1 3/1",
			res.Group.ID, res.Group.LastRunSeq, res.Group.LastEventSeq)
	}
	wantCounts(t, res.Group, map[api.RunStatus]int64{api.StatusQueued: 3})
	if len(res.Events) != 1 || res.Events[0].Kind != store.EventGroupStatus ||
		res.Events[0].Seq != 1 || res.Events[0].Status == nil ||
		res.Events[0].Status.NumRuns != 3 || res.Events[0].GroupID != "g1" {
		t.Fatalf("first batch events = %+v, want one status event seq 1 with 3 runs", res.Events)
	}

	// The second continues them.
	res = addRuns(t, s, "g1", makeRuns("g1", "b", 2))
	if res.PrevRunSeq != 3 || res.PrevEventSeq != 1 {
		t.Errorf("second batch prev cursors = %d/%d, want 3/1", res.PrevRunSeq, res.PrevEventSeq)
	}
	if len(res.Events) != 1 || res.Events[0].Seq != 2 ||
		!equalCounts(res.Events[0].Status.Counts, map[api.RunStatus]int64{api.StatusQueued: 5}) {
		t.Errorf("second batch events = %+v, want status seq 2 with 5 queued", res.Events)
	}
	g := getGroup(t, s, "g1")
	wantCounts(t, g, map[api.RunStatus]int64{api.StatusQueued: 5})
	if g.LastRunSeq != 5 || g.LastEventSeq != 2 || !g.Active() {
		t.Errorf("group = seqs %d/%d active %v, want 5/2 active", g.LastRunSeq, g.LastEventSeq,
			g.Active())
	}

	// Seqs follow input order across batches.
	for i, id := range []string{"a-1", "a-2", "a-3", "b-1", "b-2"} {
		r := getRun(t, s, id)
		if r.Seq != int64(i+1) || r.GroupID != "g1" {
			t.Errorf("run %s = group %q seq %d, want g1 seq %d", id, r.GroupID, r.Seq, i+1)
		}
		if r.Status != api.StatusQueued || r.Attempt != 0 || r.LeaseOwner != "" {
			t.Errorf("run %s = %s attempt %d lease %q, want queued 0 none", id, r.Status,
				r.Attempt, r.LeaseOwner)
		}
	}

	// The stored events match what AddRuns returned.
	evs := allEvents(t, s, "g1")
	if got := eventSummary(evs); !slices.Equal(got, []string{"1:status", "2:status"}) {
		t.Errorf("events = %v", got)
	}
	if evs[1].Status == nil || evs[1].Status.NumRuns != 5 {
		t.Errorf("stored status event = %+v, want 5 runs", evs[1].Status)
	}
}

// checkUntouched verifies that a group still holds exactly the runs a-1..a-n
// and one status event.
func checkUntouched(t *testing.T, s store.Store, n int) {
	t.Helper()
	g := getGroup(t, s, "g1")
	wantCounts(t, g, map[api.RunStatus]int64{api.StatusQueued: int64(n)})
	if g.LastRunSeq != int64(n) || g.LastEventSeq != 1 {
		t.Errorf("cursors after failed batch = %d/%d, want %d/1", g.LastRunSeq, g.LastEventSeq, n)
	}
	if evs := allEvents(t, s, "g1"); len(evs) != 1 {
		t.Errorf("events after failed batch = %v, want one", eventSummary(evs))
	}
	runs, err := s.ListRuns(context.Background(), "g1", 0, "", 100)
	if err != nil {
		t.Fatalf("ListRuns: %v", err)
	}
	if len(runs) != n {
		t.Errorf("runs after failed batch = %v, want %d", ids(runs), n)
	}
}

func testAddRunsDuplicateInBatch(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	addRuns(t, s, "g1", makeRuns("g1", "a", 2))

	// A batch repeating an id of its own fails whole.
	batch := makeRuns("g1", "b", 4)
	batch[3].ID = batch[1].ID
	if _, err := s.AddRuns(ctx, "g1", batch, bothSpecs()); err == nil {
		t.Fatal("AddRuns with a repeated id succeeded")
	}
	_, err := s.GetRun(ctx, "b-1")
	wantNotFound(t, "GetRun of a run in the failed batch", err)
	checkUntouched(t, s, 2)

	// The next good batch continues the cursors without a gap.
	res := addRuns(t, s, "g1", makeRuns("g1", "c", 1))
	if res.PrevRunSeq != 2 || res.PrevEventSeq != 1 || getRun(t, s, "c-1").Seq != 3 {
		t.Errorf("after failed batch: prev %d/%d, seq %d; want 2/1, 3",
			res.PrevRunSeq, res.PrevEventSeq, getRun(t, s, "c-1").Seq)
	}
}

func testAddRunsDuplicateOfStored(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	newGroup(t, s, "g2")
	addRuns(t, s, "g1", makeRuns("g1", "a", 3))

	// A batch reusing a stored id, even in another group, fails whole.
	batch := makeRuns("g2", "x", 3)
	batch[2].ID = "a-2"
	if _, err := s.AddRuns(ctx, "g2", batch, bothSpecs()); err == nil {
		t.Fatal("AddRuns reusing a stored id succeeded")
	}
	checkUntouched(t, s, 3)
	g2 := getGroup(t, s, "g2")
	if g2.NumRuns != 0 || g2.LastRunSeq != 0 || g2.LastEventSeq != 0 {
		t.Errorf("g2 after failed batch = %d runs, seqs %d/%d; want zeros", g2.NumRuns,
			g2.LastRunSeq, g2.LastEventSeq)
	}
	if r := getRun(t, s, "a-2"); r.GroupID != "g1" || r.Seq != 2 {
		t.Errorf("run a-2 = %s/%d, want g1/2", r.GroupID, r.Seq)
	}
}

func testAddRunsUnknownSpec(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	addRuns(t, s, "g1", makeRuns("g1", "a", 1))
	batch := makeRuns("g1", "b", 3)
	batch[2].SpecHash = "never-stored"
	if _, err := s.AddRuns(ctx, "g1", batch, nil); err == nil {
		t.Fatal("AddRuns with an unknown spec hash succeeded")
	}
	checkUntouched(t, s, 1)
}

func testAddRunsSharedSpec(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")

	// Many runs share one spec given once; a later batch names it only.
	runs := makeRuns("g1", "a", 50)
	runs[7].SpecHash = specB
	addRuns(t, s, "g1", runs)
	if _, err := s.AddRuns(ctx, "g1", makeRuns("g1", "b", 2), nil); err != nil {
		t.Fatalf("AddRuns naming a stored spec: %v", err)
	}
	// Giving a stored spec again is harmless.
	addRuns(t, s, "g1", makeRuns("g1", "c", 1))

	for _, c := range []struct{ id, hash string }{{"a-1", specA}, {"a-8", specB},
		{"a-50", specA}, {"b-2", specA}, {"c-1", specA}} {
		r := getRun(t, s, c.id)
		if r.SpecHash != c.hash || !jsonEqual(r.Spec, specJSON(c.hash)) {
			t.Errorf("run %s spec = %s %s, want %s %s", c.id, r.SpecHash, r.Spec, c.hash,
				specJSON(c.hash))
		}
	}
}

func testAddRunsEmpty(t *testing.T, open OpenFunc) {
	s := open(t)
	newGroup(t, s, "g1")
	addRuns(t, s, "g1", makeRuns("g1", "a", 2))
	res := addRuns(t, s, "g1", nil)
	if res.PrevRunSeq != 2 || res.PrevEventSeq != 1 || res.Group.NumRuns != 2 {
		t.Errorf("empty batch = prev %d/%d, %d runs; want 2/1, 2", res.PrevRunSeq,
			res.PrevEventSeq, res.Group.NumRuns)
	}
	g := getGroup(t, s, "g1")
	if g.LastRunSeq != 2 || g.LastEventSeq > 2 {
		t.Errorf("group after empty batch = seqs %d/%d", g.LastRunSeq, g.LastEventSeq)
	}
	if n := len(allEvents(t, s, "g1")); int64(n) != g.LastEventSeq {
		t.Errorf("%d events stored, LastEventSeq %d", n, g.LastEventSeq)
	}
}

func testStandaloneRuns(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	res := addRuns(t, s, "", makeRuns("", "solo", 2))
	if res.Group.ID != "" || len(res.Events) != 0 || res.PrevRunSeq != 0 {
		t.Errorf("standalone AddRuns = group %q, %d events, prev %d; want none",
			res.Group.ID, len(res.Events), res.PrevRunSeq)
	}
	r := getRun(t, s, "solo-2")
	if r.GroupID != "" || r.Seq != 0 || r.Status != api.StatusQueued {
		t.Errorf("standalone run = group %q seq %d %s, want \"\" 0 queued", r.GroupID, r.Seq,
			r.Status)
	}

	// They run and finish like any other, logging nothing anywhere.
	claimed := claim(t, s, "n1", 10, at(2))
	if !slices.Equal(ids(claimed), []string{"solo-1", "solo-2"}) {
		t.Fatalf("claimed %v, want solo-1 solo-2", ids(claimed))
	}
	fin := finish(t, s, completed("solo-1", "n1", 3))
	if len(fin.Applied) != 1 || len(fin.Events) != 0 {
		t.Errorf("finish of standalone run = %d applied, events %v; want 1, none",
			len(fin.Applied), eventSummary(fin.Events))
	}
	cancel, err := s.CancelRuns(ctx, "", []string{"solo-2"}, at(4))
	if err != nil {
		t.Fatalf("CancelRuns: %v", err)
	}
	if len(cancel.Applied) != 1 || cancel.Applied[0].Status != api.StatusCancelling ||
		len(cancel.Events) != 0 {
		t.Errorf("cancel of standalone run = %+v", cancel)
	}
	if g := getGroup(t, s, "g1"); g.NumRuns != 0 || g.LastEventSeq != 0 {
		t.Errorf("unrelated group changed: %d runs, %d events", g.NumRuns, g.LastEventSeq)
	}

	// A run claiming another group than the call's is refused.
	bad := makeRuns("g1", "x", 1)
	if _, err := s.AddRuns(ctx, "", bad, bothSpecs()); err == nil {
		t.Error("AddRuns of a g1 run as standalone succeeded")
	}
}
