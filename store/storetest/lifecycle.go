package storetest

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

func testFinishApplied(t *testing.T, open OpenFunc) {
	s := open(t)
	newGroup(t, s, "g1")
	addRuns(t, s, "g1", makeRuns("g1", "a", 4)) // event 1
	claim(t, s, "n1", 3, at(2))

	failure := json.RawMessage(`{"ref_id":"x","message":"boom","detail":null}`)
	res := finish(t, s,
		completed("a-2", "n1", 5),
		store.Finish{RunID: "a-1", Node: "n1", Status: api.StatusFailed, Error: failure,
			At: at(6)},
		store.Finish{RunID: "a-3", Node: "n1", Status: api.StatusCompleted, Cached: true,
			Output: json.RawMessage(`{"type":"text","content":"cached"}`), At: at(7)})

	// Applied runs come back as stored, in the order given.
	if !slices.Equal(ids(res.Applied), []string{"a-2", "a-1", "a-3"}) {
		t.Fatalf("applied = %v, want a-2 a-1 a-3", ids(res.Applied))
	}
	a2 := res.Applied[0]
	if a2.Status != api.StatusCompleted || !jsonEqual(a2.Output, completed("a-2", "", 0).Output) ||
		!jsonEqual(a2.Usage, json.RawMessage(`{"tokens":3}`)) || !a2.FinishedAt.Equal(at(5)) ||
		!a2.ModifiedAt.Equal(at(5)) || a2.LeaseOwner != "" || a2.Attempt != 1 || a2.Seq != 2 {
		t.Errorf("applied a-2 = %+v", a2)
	}
	if res.Applied[1].Status != api.StatusFailed || !jsonEqual(res.Applied[1].Error, failure) {
		t.Errorf("applied a-1 = %s error %s", res.Applied[1].Status, res.Applied[1].Error)
	}
	if !res.Applied[2].Cached {
		t.Error("applied a-3 is not marked cached")
	}

	// Events: one run state per run in order, then the group's status.
	want := []string{"2:state:a-2", "3:state:a-1", "4:state:a-3", "5:status"}
	if got := eventSummary(res.Events); !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
	status := res.Events[3].Status
	if status == nil || status.NumRuns != 4 || !equalCounts(status.Counts,
		map[api.RunStatus]int64{api.StatusQueued: 1, api.StatusCompleted: 2, api.StatusFailed: 1}) {
		t.Errorf("status event = %+v", status)
	}
	if res.Events[0].Run == nil || res.Events[0].Run.ID != "a-2" || !res.Events[0].At.Equal(at(5)) {
		t.Errorf("first run state event = %+v", res.Events[0])
	}

	// The log holds the same events, runs filled in with their outcome.
	logged := allEvents(t, s, "g1")
	if got := eventSummary(logged); !slices.Equal(got, append([]string{"1:status"}, want...)) {
		t.Fatalf("logged events = %v", got)
	}
	for _, ev := range logged[1:4] {
		if ev.Run == nil || ev.Run.ID != ev.RunID || !ev.Run.Status.Terminal() ||
			ev.GroupID != "g1" {
			t.Errorf("logged run state event %d = %+v", ev.Seq, ev)
		}
	}
	if r := logged[1].Run; r.Status != api.StatusCompleted || r.Processor != "lite" ||
		r.Seq != 2 || !r.FinishedAt.Equal(at(5)) || !logged[1].At.Equal(at(5)) {
		t.Errorf("logged a-2 event = run %+v at %v", r, logged[1].At)
	}
	if r := logged[2].Run; !jsonEqual(r.Error, failure) || r.Attempt != 1 {
		t.Errorf("logged a-1 event = error %s attempt %d", r.Error, r.Attempt)
	}
	if logged[4].Status == nil || !equalCounts(logged[4].Status.Counts, status.Counts) ||
		logged[4].Run != nil {
		t.Errorf("logged status event = %+v", logged[4])
	}

	g := getGroup(t, s, "g1")
	wantCounts(t, g, map[api.RunStatus]int64{api.StatusQueued: 1, api.StatusCompleted: 2,
		api.StatusFailed: 1})
	if g.LastEventSeq != 5 || !g.Active() {
		t.Errorf("group = LastEventSeq %d active %v, want 5 active", g.LastEventSeq, g.Active())
	}
	r := wantStatus(t, s, "a-1", api.StatusFailed)
	if !r.FinishedAt.Equal(at(6)) || r.LeaseOwner != "" || !r.LeaseUntil.IsZero() {
		t.Errorf("stored a-1 = finished %v lease %q until %v", r.FinishedAt, r.LeaseOwner,
			r.LeaseUntil)
	}
}

func testFinishWrongNode(t *testing.T, open OpenFunc) {
	s := open(t)
	newGroup(t, s, "g1")
	addRuns(t, s, "g1", makeRuns("g1", "a", 2))
	claim(t, s, "n1", 2, at(2))

	res := finish(t, s, completed("a-1", "n2", 5))
	if len(res.Applied) != 0 || len(res.Events) != 0 {
		t.Errorf("finish by the wrong node = %v, events %v; want skipped", ids(res.Applied),
			eventSummary(res.Events))
	}
	r := wantStatus(t, s, "a-1", api.StatusRunning)
	if r.LeaseOwner != "n1" || r.Output != nil {
		t.Errorf("run after skipped finish = lease %s output %s", r.LeaseOwner, r.Output)
	}
	if g := getGroup(t, s, "g1"); g.LastEventSeq != 1 {
		t.Errorf("LastEventSeq = %d after skipped finish, want 1", g.LastEventSeq)
	}

	// A batch mixing both applies only the right one.
	res = finish(t, s, completed("a-1", "n2", 6), completed("a-2", "n1", 6))
	if !slices.Equal(ids(res.Applied), []string{"a-2"}) {
		t.Errorf("mixed batch applied %v, want a-2", ids(res.Applied))
	}
	if got := eventSummary(res.Events); !slices.Equal(got, []string{"2:state:a-2", "3:status"}) {
		t.Errorf("mixed batch events = %v", got)
	}
	res = finish(t, s, completed("a-1", "n1", 7))
	if !slices.Equal(ids(res.Applied), []string{"a-1"}) {
		t.Errorf("finish by the lease holder applied %v, want a-1", ids(res.Applied))
	}
}

func testFinishNeverOverwrites(t *testing.T, open OpenFunc) {
	s := open(t)
	newGroup(t, s, "g1")
	addRuns(t, s, "g1", makeRuns("g1", "a", 2))
	claim(t, s, "n1", 2, at(2))
	finish(t, s, completed("a-1", "n1", 5))

	// Neither the node nor an unleased finish changes a terminal run.
	for _, node := range []string{"n1", ""} {
		res := finish(t, s, store.Finish{RunID: "a-1", Node: node, Status: api.StatusFailed,
			Error: json.RawMessage(`{"message":"late"}`), At: at(9)})
		if len(res.Applied) != 0 || len(res.Events) != 0 {
			t.Errorf("second finish (node %q) applied %v", node, ids(res.Applied))
		}
	}
	r := wantStatus(t, s, "a-1", api.StatusCompleted)
	if r.Error != nil || !r.FinishedAt.Equal(at(5)) {
		t.Errorf("terminal run changed: error %s finished %v", r.Error, r.FinishedAt)
	}

	// Two finishes of one run in one batch: the first wins.
	res := finish(t, s,
		store.Finish{RunID: "a-2", Node: "n1", Status: api.StatusFailed, At: at(10)},
		completed("a-2", "n1", 11))
	if len(res.Applied) != 1 || res.Applied[0].Status != api.StatusFailed {
		t.Errorf("duplicate finish in batch applied %+v, want the failure only", res.Applied)
	}
	if got := eventSummary(res.Events); !slices.Equal(got, []string{"4:state:a-2", "5:status"}) {
		t.Errorf("duplicate finish events = %v", got)
	}
	wantCounts(t, getGroup(t, s, "g1"),
		map[api.RunStatus]int64{api.StatusCompleted: 1, api.StatusFailed: 1})

	// An unknown run is skipped, not an error.
	if res := finish(t, s, completed("missing", "", 12)); len(res.Applied) != 0 {
		t.Errorf("finish of an unknown run applied %v", ids(res.Applied))
	}
}

func testFinishUnleased(t *testing.T, open OpenFunc) {
	s := open(t)
	newGroup(t, s, "g1")
	addRuns(t, s, "g1", makeRuns("g1", "a", 2))
	claim(t, s, "n1", 1, at(2))

	// An empty Node finishes queued and running runs alike.
	res := finish(t, s,
		store.Finish{RunID: "a-2", Status: api.StatusFailed, At: at(3),
			Error: json.RawMessage(`{"message":"invalid input"}`)},
		store.Finish{RunID: "a-1", Status: api.StatusFailed, At: at(3),
			Error: json.RawMessage(`{"message":"timed out"}`)})
	if !slices.Equal(ids(res.Applied), []string{"a-2", "a-1"}) {
		t.Errorf("unleased finish applied %v, want a-2 a-1", ids(res.Applied))
	}
	g := getGroup(t, s, "g1")
	wantCounts(t, g, map[api.RunStatus]int64{api.StatusFailed: 2})
	if g.Active() {
		t.Error("group with only failed runs is active")
	}
}

func testFinishNotTerminal(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	addRuns(t, s, "g1", makeRuns("g1", "a", 2))
	claim(t, s, "n1", 2, at(2))
	_, err := s.FinishRuns(ctx, []store.Finish{completed("a-1", "n1", 3),
		{RunID: "a-2", Node: "n1", Status: api.StatusRunning, At: at(3)}})
	if err == nil {
		t.Fatal("FinishRuns with status running succeeded")
	}
	wantStatus(t, s, "a-1", api.StatusRunning)
	if g := getGroup(t, s, "g1"); g.LastEventSeq != 1 {
		t.Errorf("LastEventSeq = %d after refused batch, want 1", g.LastEventSeq)
	}
}

func testFinishSeveralGroups(t *testing.T, open OpenFunc) {
	s := open(t)
	newGroup(t, s, "g1")
	newGroup(t, s, "g2")
	addRuns(t, s, "g1", makeRuns("g1", "a", 2))
	addRuns(t, s, "g2", makeRuns("g2", "b", 2))
	addRuns(t, s, "", makeRuns("", "solo", 1))
	claim(t, s, "n1", 5, at(2))

	res := finish(t, s, completed("b-1", "n1", 3), completed("a-1", "n1", 3),
		completed("solo-1", "n1", 3), completed("b-2", "n1", 4))
	if len(res.Applied) != 4 {
		t.Errorf("applied %v, want 4 runs", ids(res.Applied))
	}

	// Run states in finish order, each numbered in its own group's log,
	// then one status event per group in order of first touch.
	want := []string{"2:state:b-1", "2:state:a-1", "3:state:b-2", "4:status", "3:status"}
	if got := eventSummary(res.Events); !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
	if res.Events[3].GroupID != "g2" || res.Events[4].GroupID != "g1" {
		t.Errorf("status events of %s, %s; want g2, g1", res.Events[3].GroupID,
			res.Events[4].GroupID)
	}
	if got := eventSummary(allEvents(t, s, "g1")); !slices.Equal(got,
		[]string{"1:status", "2:state:a-1", "3:status"}) {
		t.Errorf("g1 log = %v", got)
	}
	if got := eventSummary(allEvents(t, s, "g2")); !slices.Equal(got,
		[]string{"1:status", "2:state:b-1", "3:state:b-2", "4:status"}) {
		t.Errorf("g2 log = %v", got)
	}
}

func testRetryRuns(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	addRuns(t, s, "g1", makeRuns("g1", "a", 3))
	claim(t, s, "n1", 2, at(2)) // a-1, a-2

	lastErr := json.RawMessage(`{"message":"upstream 503"}`)
	err := s.RetryRuns(ctx, []store.Retry{
		{RunID: "a-1", Node: "n1", NotBefore: at(30), Error: lastErr, At: at(4)},
		{RunID: "a-2", Node: "n2", NotBefore: at(30), At: at(4)}, // not its lease
		{RunID: "a-3", Node: "n1", NotBefore: at(30), At: at(4)}, // not running
	})
	if err != nil {
		t.Fatalf("RetryRuns: %v", err)
	}
	r := wantStatus(t, s, "a-1", api.StatusQueued)
	if !r.NotBefore.Equal(at(30)) || !jsonEqual(r.Error, lastErr) || r.LeaseOwner != "" ||
		r.Attempt != 1 || !r.ModifiedAt.Equal(at(4)) {
		t.Errorf("retried run = %+v", r)
	}
	if r := wantStatus(t, s, "a-2", api.StatusRunning); r.LeaseOwner != "n1" {
		t.Errorf("a-2 lease = %s, want n1", r.LeaseOwner)
	}
	if r := wantStatus(t, s, "a-3", api.StatusQueued); !r.NotBefore.IsZero() {
		t.Errorf("a-3 NotBefore = %v, want zero", r.NotBefore)
	}
	g := getGroup(t, s, "g1")
	wantCounts(t, g, map[api.RunStatus]int64{api.StatusQueued: 2, api.StatusRunning: 1})
	if g.LastEventSeq != 1 {
		t.Errorf("LastEventSeq = %d after retry, want 1", g.LastEventSeq)
	}

	// The retried run waits for NotBefore, then runs again; its old lease
	// holder can no longer finish it.
	if got := claim(t, s, "n2", 5, at(10)); !slices.Equal(ids(got), []string{"a-3"}) {
		t.Errorf("claim at 10 = %v, want a-3", ids(got))
	}
	got := claim(t, s, "n2", 5, at(31))
	if !slices.Equal(ids(got), []string{"a-1"}) || got[0].Attempt != 2 {
		t.Fatalf("claim at 31 = %+v, want a-1 attempt 2", got)
	}
	if res := finish(t, s, completed("a-1", "n1", 32)); len(res.Applied) != 0 {
		t.Error("finish by the previous lease holder was applied")
	}
	if res := finish(t, s, completed("a-1", "n2", 33)); len(res.Applied) != 1 ||
		res.Applied[0].Error != nil {
		t.Errorf("finish after retry = %+v, want applied with the old error cleared",
			res.Applied)
	}
}

func testRecoverNode(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	addRuns(t, s, "g1", makeRuns("g1", "a", 5))
	claim(t, s, "n1", 3, at(2))                                                // a-1..a-3, leases until at(62)
	claim(t, s, "n2", 1, at(2))                                                // a-4
	finish(t, s, completed("a-3", "n1", 3))                                    // event 2, 3
	if _, err := s.CancelRuns(ctx, "g1", []string{"a-2"}, at(4)); err != nil { // event 4
		t.Fatalf("CancelRuns: %v", err)
	}
	wantStatus(t, s, "a-2", api.StatusCancelling)

	// n1 restarts: its running run is requeued, its cancelling run cancelled.
	n, events, err := s.Recover(ctx, "n1", at(10))
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if n != 2 {
		t.Errorf("Recover touched %d runs, want 2", n)
	}
	if got := eventSummary(events); !slices.Equal(got, []string{"5:state:a-2", "6:status"}) {
		t.Errorf("Recover events = %v, want 5:state:a-2 6:status", got)
	}
	r := wantStatus(t, s, "a-1", api.StatusQueued)
	if r.LeaseOwner != "" || !r.LeaseUntil.IsZero() || r.Attempt != 1 {
		t.Errorf("requeued run = lease %q until %v attempt %d", r.LeaseOwner, r.LeaseUntil,
			r.Attempt)
	}
	if r := wantStatus(t, s, "a-2", api.StatusCancelled); !r.FinishedAt.Equal(at(10)) {
		t.Errorf("cancelled run FinishedAt = %v, want %v", r.FinishedAt, at(10))
	}
	wantStatus(t, s, "a-3", api.StatusCompleted)
	if r := wantStatus(t, s, "a-4", api.StatusRunning); r.LeaseOwner != "n2" {
		t.Errorf("other node's run lease = %s, want n2", r.LeaseOwner)
	}
	g := getGroup(t, s, "g1")
	wantCounts(t, g, map[api.RunStatus]int64{api.StatusQueued: 2, api.StatusRunning: 1,
		api.StatusCompleted: 1, api.StatusCancelled: 1})
	if got := eventSummary(allEvents(t, s, "g1")); len(got) != int(g.LastEventSeq) ||
		got[len(got)-1] != "6:status" {
		t.Errorf("log = %v, LastEventSeq %d", got, g.LastEventSeq)
	}

	// Nothing left for n1: a second Recover changes nothing.
	if n, events, err := s.Recover(ctx, "n1", at(11)); err != nil || n != 0 || len(events) != 0 {
		t.Errorf("second Recover = %d, %v, %v; want nothing", n, eventSummary(events), err)
	}
	if got := claim(t, s, "n1", 5, at(12)); !slices.Equal(ids(got), []string{"a-1", "a-5"}) {
		t.Errorf("claim after recover = %v, want a-1 a-5", ids(got))
	}
}

func testRecoverExpired(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	addRuns(t, s, "g1", makeRuns("g1", "a", 2))
	claim(t, s, "dead", 1, at(0))  // a-1 until at(60)
	claim(t, s, "live", 1, at(50)) // a-2 until at(110)

	// Before expiry nothing moves; after, only the expired lease.
	if n, _, err := s.Recover(ctx, "", at(59)); err != nil || n != 0 {
		t.Errorf("Recover before expiry = %d, %v; want 0", n, err)
	}
	n, _, err := s.Recover(ctx, "", at(61))
	if err != nil || n != 1 {
		t.Fatalf("Recover after expiry = %d, %v; want 1", n, err)
	}
	wantStatus(t, s, "a-1", api.StatusQueued)
	wantStatus(t, s, "a-2", api.StatusRunning)

	// The dead node's late finish is refused; the requeued run runs again.
	if res := finish(t, s, completed("a-1", "dead", 62)); len(res.Applied) != 0 {
		t.Error("finish after the lease was recovered was applied")
	}
	if got := claim(t, s, "live", 5, at(63)); !slices.Equal(ids(got), []string{"a-1"}) ||
		got[0].Attempt != 2 {
		t.Errorf("claim after recovery = %+v, want a-1 attempt 2", got)
	}
}

func testCancelRunsByID(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	newGroup(t, s, "g2")
	addRuns(t, s, "g1", makeRuns("g1", "a", 4))
	addRuns(t, s, "g2", makeRuns("g2", "b", 1))
	claim(t, s, "n1", 2, at(2))             // a-1, a-2
	finish(t, s, completed("a-2", "n1", 3)) // events 2, 3

	res, err := s.CancelRuns(ctx, "g1", []string{"a-1", "a-2", "a-3", "b-1", "missing", "a-3"},
		at(5))
	if err != nil {
		t.Fatalf("CancelRuns: %v", err)
	}

	// Running becomes cancelling, queued cancelled; the rest is skipped.
	if !slices.Equal(ids(res.Applied), []string{"a-1", "a-3"}) {
		t.Fatalf("applied = %v, want a-1 a-3", ids(res.Applied))
	}
	if res.Applied[0].Status != api.StatusCancelling || res.Applied[1].Status != api.StatusCancelled {
		t.Errorf("statuses = %s %s, want cancelling cancelled", res.Applied[0].Status,
			res.Applied[1].Status)
	}
	if got := eventSummary(res.Events); !slices.Equal(got, []string{"4:state:a-3", "5:status"}) {
		t.Errorf("events = %v, want 4:state:a-3 5:status", got)
	}
	if r := wantStatus(t, s, "a-3", api.StatusCancelled); !r.FinishedAt.Equal(at(5)) {
		t.Errorf("cancelled FinishedAt = %v", r.FinishedAt)
	}
	if r := wantStatus(t, s, "a-1", api.StatusCancelling); r.LeaseOwner != "n1" {
		t.Errorf("cancelling run lease = %q, want n1 (its node still stops it)", r.LeaseOwner)
	}
	wantStatus(t, s, "a-2", api.StatusCompleted)
	wantStatus(t, s, "b-1", api.StatusQueued)
	wantStatus(t, s, "a-4", api.StatusQueued)
	g := getGroup(t, s, "g1")
	wantCounts(t, g, map[api.RunStatus]int64{api.StatusCancelling: 1, api.StatusCompleted: 1,
		api.StatusCancelled: 1, api.StatusQueued: 1})

	// The cancelling run is no longer claimable; its node finishes it.
	if got := claim(t, s, "n2", 5, at(6)); !slices.Equal(ids(got), []string{"a-4", "b-1"}) {
		t.Errorf("claim = %v, want a-4 b-1", ids(got))
	}
	fin := finish(t, s, store.Finish{RunID: "a-1", Node: "n1", Status: api.StatusCancelled,
		At: at(7)})
	if len(fin.Applied) != 1 || fin.Applied[0].Status != api.StatusCancelled {
		t.Errorf("finish of cancelling run = %+v", fin.Applied)
	}

	// Without a group, ids of any group are cancelled.
	res, err = s.CancelRuns(ctx, "", []string{"b-1"}, at(8))
	if err != nil || len(res.Applied) != 1 || res.Applied[0].Status != api.StatusCancelling {
		t.Errorf("CancelRuns without group = %+v, %v", res, err)
	}
	if got := eventSummary(res.Events); !slices.Equal(got, []string{"2:status"}) ||
		res.Events[0].GroupID != "g2" {
		t.Errorf("events = %v, want g2's 2:status", got)
	}
}

func testCancelRunsGroup(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	newGroup(t, s, "g2")
	addRuns(t, s, "g1", makeRuns("g1", "a", 5))
	addRuns(t, s, "g2", makeRuns("g2", "b", 1))
	claim(t, s, "n1", 2, at(2))             // a-1, a-2
	finish(t, s, completed("a-1", "n1", 3)) // events 2, 3

	res, err := s.CancelRuns(ctx, "g1", nil, at(5))
	if err != nil {
		t.Fatalf("CancelRuns: %v", err)
	}
	if !slices.Equal(ids(res.Applied), []string{"a-2", "a-3", "a-4", "a-5"}) {
		t.Errorf("applied = %v, want a-2..a-5 in seq order", ids(res.Applied))
	}
	want := []string{"4:state:a-3", "5:state:a-4", "6:state:a-5", "7:status"}
	if got := eventSummary(res.Events); !slices.Equal(got, want) {
		t.Errorf("events = %v, want %v", got, want)
	}
	g := getGroup(t, s, "g1")
	wantCounts(t, g, map[api.RunStatus]int64{api.StatusCompleted: 1, api.StatusCancelling: 1,
		api.StatusCancelled: 3})
	if !g.Active() {
		t.Error("group with a cancelling run is not active")
	}
	wantStatus(t, s, "b-1", api.StatusQueued)

	// Once the cancelling run stops the group is inactive; cancelling
	// again changes nothing and logs nothing.
	finish(t, s, store.Finish{RunID: "a-2", Node: "n1", Status: api.StatusCancelled, At: at(6)})
	if g := getGroup(t, s, "g1"); g.Active() {
		t.Errorf("group still active: %v", g.Counts)
	}
	before := getGroup(t, s, "g1").LastEventSeq
	res, err = s.CancelRuns(ctx, "g1", nil, at(7))
	if err != nil || len(res.Applied) != 0 || len(res.Events) != 0 {
		t.Errorf("second cancel = %+v, %v; want nothing", res, err)
	}
	if after := getGroup(t, s, "g1").LastEventSeq; after != before {
		t.Errorf("LastEventSeq moved from %d to %d", before, after)
	}
}
