package storetest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// claimedRuns returns makeRuns with the runs at the given indexes marked
// running and leased to node until at(61), as the engine hands AddRuns the
// runs it starts at once.
func claimedRuns(groupID, prefix string, n int, node string, idx ...int) []store.Run {
	runs := makeRuns(groupID, prefix, n)
	for _, i := range idx {
		runs[i].Status = api.StatusRunning
		runs[i].LeaseOwner = node
		runs[i].LeaseUntil = at(61)
	}
	return runs
}

func testAddRunsClaimed(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")

	// a-1 and a-3 are claimed by n1; a-4 says running but has no lease
	// owner, so it is queued like a-2.
	runs := claimedRuns("g1", "a", 4, "n1", 0, 2)
	runs[3].Status = api.StatusRunning
	res := addRuns(t, s, "g1", runs)
	want := map[api.RunStatus]int64{api.StatusQueued: 2, api.StatusRunning: 2}
	wantCounts(t, res.Group, want)
	if len(res.Events) != 1 || res.Events[0].Status == nil ||
		!equalCounts(res.Events[0].Status.Counts, want) {
		t.Errorf("status event = %+v, want counts %v", res.Events, want)
	}
	wantCounts(t, getGroup(t, s, "g1"), want)

	// The claimed runs are stored as ClaimRuns would have left them.
	for _, id := range []string{"a-1", "a-3"} {
		r := wantStatus(t, s, id, api.StatusRunning)
		if r.Attempt != 1 || r.LeaseOwner != "n1" || !r.LeaseUntil.Equal(at(61)) ||
			!jsonEqual(r.Spec, specJSON(specA)) {
			t.Errorf("claimed run %s = attempt %d lease %q until %v spec %s", id, r.Attempt,
				r.LeaseOwner, r.LeaseUntil, r.Spec)
		}
	}
	if r := wantStatus(t, s, "a-4", api.StatusQueued); r.Attempt != 0 || r.LeaseOwner != "" {
		t.Errorf("a-4 = attempt %d lease %q, want a queued run", r.Attempt, r.LeaseOwner)
	}

	// ClaimRuns hands out only the queued ones.
	if got := claim(t, s, "n2", 10, at(2)); !slices.Equal(ids(got), []string{"a-2", "a-4"}) {
		t.Errorf("claim = %v, want a-2 a-4", ids(got))
	}
	wantCounts(t, getGroup(t, s, "g1"), map[api.RunStatus]int64{api.StatusRunning: 4})

	// A claimed run without a lease end is refused with its whole batch.
	bad := claimedRuns("g1", "b", 2, "n1", 1)
	bad[1].LeaseUntil = time.Time{}
	if _, err := s.AddRuns(ctx, "g1", bad, bothSpecs()); err == nil {
		t.Error("AddRuns of a claimed run without LeaseUntil succeeded")
	}
	_, err := s.GetRun(ctx, "b-1")
	wantNotFound(t, "GetRun after refused batch", err)
}

func testAddRunsClaimedFinish(t *testing.T, open OpenFunc) {
	s := open(t)
	newGroup(t, s, "g1")
	runs := claimedRuns("g1", "a", 3, "n1", 0, 2)
	runs[2].LeaseOwner = "n2"
	addRuns(t, s, "g1", runs) // event 1
	solo := claimedRuns("", "solo", 1, "n1", 0)
	addRuns(t, s, "", solo)

	// Only the node holding the lease finishes a run claimed at insert.
	if res := finish(t, s, completed("a-1", "n2", 5)); len(res.Applied) != 0 {
		t.Errorf("finish by the wrong node applied %v", ids(res.Applied))
	}
	res := finish(t, s, completed("a-1", "n1", 6), completed("solo-1", "n1", 6))
	if !slices.Equal(ids(res.Applied), []string{"a-1", "solo-1"}) {
		t.Fatalf("applied %v, want a-1 solo-1", ids(res.Applied))
	}
	a1 := res.Applied[0]
	if a1.Status != api.StatusCompleted || a1.GroupID != "g1" || a1.Seq != 1 ||
		a1.Attempt != 1 || !jsonEqual(a1.Input, runs[0].Input) || a1.LeaseOwner != "" ||
		!a1.FinishedAt.Equal(at(6)) || !a1.CreatedAt.Equal(at(1)) {
		t.Errorf("applied a-1 = %+v", a1)
	}
	if got := eventSummary(res.Events); !slices.Equal(got, []string{"2:state:a-1", "3:status"}) {
		t.Errorf("events = %v, want 2:state:a-1 3:status", got)
	}
	wantCounts(t, getGroup(t, s, "g1"), map[api.RunStatus]int64{api.StatusQueued: 1,
		api.StatusRunning: 1, api.StatusCompleted: 1})
	if r := wantStatus(t, s, "solo-1", api.StatusCompleted); r.LeaseOwner != "" {
		t.Errorf("finished solo-1 still leased to %q", r.LeaseOwner)
	}

	// After a reopen the store no longer remembers a-3, and still finishes
	// it for n2 only.
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = open(t)
	if res := finish(t, s, completed("a-3", "n1", 7)); len(res.Applied) != 0 {
		t.Errorf("finish by the wrong node after reopen applied %v", ids(res.Applied))
	}
	res = finish(t, s, completed("a-3", "n2", 8))
	if len(res.Applied) != 1 || res.Applied[0].Attempt != 1 || res.Applied[0].Seq != 3 {
		t.Errorf("finish after reopen = %+v, want a-3 attempt 1 seq 3", res.Applied)
	}
	wantCounts(t, getGroup(t, s, "g1"), map[api.RunStatus]int64{api.StatusQueued: 1,
		api.StatusCompleted: 2})
	checkGapless(t, s, "g1")
}

func testAddRunsClaimedRecover(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	runs := claimedRuns("g1", "a", 3, "n1", 0, 1)
	runs[1].LeaseOwner = "n2"
	addRuns(t, s, "g1", runs)

	// n1 restarts: its run goes back to the queue, n2's stays.
	n, _, err := s.Recover(ctx, "n1", at(10))
	if err != nil || n != 1 {
		t.Fatalf("Recover(n1) = %d, %v; want 1", n, err)
	}
	if r := wantStatus(t, s, "a-1", api.StatusQueued); r.LeaseOwner != "" || r.Attempt != 1 {
		t.Errorf("recovered a-1 = lease %q attempt %d", r.LeaseOwner, r.Attempt)
	}
	wantStatus(t, s, "a-2", api.StatusRunning)
	wantCounts(t, getGroup(t, s, "g1"), map[api.RunStatus]int64{api.StatusQueued: 2,
		api.StatusRunning: 1})

	// n1's late finish is refused; n2's lease expires and is recovered too.
	if res := finish(t, s, completed("a-1", "n1", 11)); len(res.Applied) != 0 {
		t.Errorf("finish after recovery applied %v", ids(res.Applied))
	}
	if n, _, err := s.Recover(ctx, "", at(62)); err != nil || n != 1 {
		t.Errorf("Recover after expiry = %d, %v; want 1", n, err)
	}
	got := claim(t, s, "n3", 10, at(63))
	if !slices.Equal(ids(got), []string{"a-1", "a-2", "a-3"}) {
		t.Fatalf("claim after recovery = %v, want a-1 a-2 a-3", ids(got))
	}
	if got[0].Attempt != 2 || got[2].Attempt != 1 {
		t.Errorf("attempts = %d, %d; want 2, 1", got[0].Attempt, got[2].Attempt)
	}
	wantCounts(t, getGroup(t, s, "g1"), map[api.RunStatus]int64{api.StatusRunning: 3})
}
