package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// checkGapless verifies that a group's log numbers its events 1..LastEventSeq
// and that paging from any cursor agrees with the whole log.
func checkGapless(t *testing.T, s store.Store, groupID string) []store.Event {
	t.Helper()
	ctx := context.Background()
	g := getGroup(t, s, groupID)
	evs := allEvents(t, s, groupID)
	if int64(len(evs)) != g.LastEventSeq {
		t.Errorf("group %s: %d events, LastEventSeq %d", groupID, len(evs), g.LastEventSeq)
	}
	for i, ev := range evs {
		if ev.Seq != int64(i+1) || ev.GroupID != groupID {
			t.Fatalf("group %s: event %d is %s seq %d", groupID, i, ev.GroupID, ev.Seq)
		}
	}
	if len(evs) >= 5 {
		page, err := s.ListEvents(ctx, groupID, 3, 2)
		if err != nil || len(page) != 2 || page[0].Seq != 4 || page[1].Seq != 5 {
			t.Errorf("ListEvents(after 3, limit 2) = %v, %v", eventSummary(page), err)
		}
	}
	if tail, err := s.ListEvents(ctx, groupID, g.LastEventSeq, 10); err != nil || len(tail) != 0 {
		t.Errorf("ListEvents after the last event = %v, %v", eventSummary(tail), err)
	}
	return evs
}

func testEventsGapless(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	newGroup(t, s, "g2")

	// Mix every operation that logs across two groups.
	addRuns(t, s, "g1", makeRuns("g1", "a", 6))
	addRuns(t, s, "g2", makeRuns("g2", "b", 4))
	claim(t, s, "n1", 5, at(1))
	finish(t, s, completed("a-1", "n1", 2), completed("b-1", "n1", 2), completed("a-2", "n1", 2))
	if _, err := s.CancelRuns(ctx, "g1", []string{"a-3", "a-6"}, at(3)); err != nil {
		t.Fatalf("CancelRuns: %v", err)
	}
	if _, _, err := s.Recover(ctx, "n1", at(4)); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	addRuns(t, s, "g1", makeRuns("g1", "c", 2))
	claim(t, s, "n2", 20, at(5))
	if _, err := s.CancelRuns(ctx, "g2", nil, at(6)); err != nil {
		t.Fatalf("CancelRuns: %v", err)
	}

	// Every run that became terminal appears exactly once in its log.
	for _, id := range []string{"g1", "g2"} {
		evs := checkGapless(t, s, id)
		seen := map[string]int{}
		for _, ev := range evs {
			if ev.Kind == store.EventRunState {
				seen[ev.RunID]++
				if ev.Run == nil || !ev.Run.Status.Terminal() {
					t.Errorf("event %d of %s: run %+v is not terminal", ev.Seq, id, ev.Run)
				}
			}
		}
		g := getGroup(t, s, id)
		terminal := g.Counts[api.StatusCompleted] + g.Counts[api.StatusFailed] +
			g.Counts[api.StatusCancelled]
		if int64(len(seen)) != terminal {
			t.Errorf("group %s: run state events for %d runs, %d terminal", id, len(seen), terminal)
		}
		for run, n := range seen {
			if n != 1 {
				t.Errorf("run %s has %d run state events", run, n)
			}
		}
	}
}

func testConcurrentClaimFinish(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	const total, workers = 240, 6
	for i := 0; i < 4; i++ {
		addRuns(t, s, "g1", makeRuns("g1", fmt.Sprintf("b%d", i), total/4))
	}

	// Workers claim and finish until nothing is left, while a reader follows
	// the event log and a recoverer runs with no lease yet expired.
	var (
		mu       sync.Mutex
		claimedB = map[string]string{}
		errs     []string
		wg       sync.WaitGroup
		done     = make(chan struct{})
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		errs = append(errs, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(node string) {
			defer wg.Done()
			for {
				runs, err := s.ClaimRuns(ctx, store.Claim{Processor: "lite", Node: node, Limit: 7,
					Now: at(1), LeaseUntil: at(3600)})
				if err != nil {
					fail("claim: %v", err)
					return
				}
				if len(runs) == 0 {
					return
				}
				fs := make([]store.Finish, len(runs))
				mu.Lock()
				for i, r := range runs {
					if prev, ok := claimedB[r.ID]; ok {
						errs = append(errs, fmt.Sprintf("run %s claimed by %s and %s", r.ID, prev, node))
					}
					claimedB[r.ID] = node
					fs[i] = completed(r.ID, node, 2)
				}
				mu.Unlock()
				res, err := s.FinishRuns(ctx, fs)
				if err != nil {
					fail("finish: %v", err)
					return
				}
				if len(res.Applied) != len(fs) {
					fail("node %s finished %d of its %d runs", node, len(res.Applied), len(fs))
				}
			}
		}(fmt.Sprintf("n%d", w))
	}
	var side sync.WaitGroup
	side.Add(2)
	go func() {
		defer side.Done()
		last := int64(0)
		for {
			select {
			case <-done:
				return
			default:
			}
			evs, err := s.ListEvents(ctx, "g1", last, 50)
			if err != nil {
				fail("list events: %v", err)
				return
			}
			for _, ev := range evs {
				if ev.Seq != last+1 {
					fail("event %d follows %d", ev.Seq, last)
				}
				last = ev.Seq
			}
		}
	}()
	go func() {
		defer side.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if n, _, err := s.Recover(ctx, "", at(2)); err != nil || n != 0 {
				fail("recover = %d, %v", n, err)
				return
			}
		}
	}()
	wg.Wait()
	close(done)
	side.Wait()
	for _, e := range errs {
		t.Error(e)
	}

	// Every run ran exactly once and is logged exactly once.
	if len(claimedB) != total {
		t.Errorf("%d runs claimed, want %d", len(claimedB), total)
	}
	g := getGroup(t, s, "g1")
	wantCounts(t, g, map[api.RunStatus]int64{api.StatusCompleted: total})
	states := 0
	for _, ev := range checkGapless(t, s, "g1") {
		if ev.Kind == store.EventRunState {
			states++
		}
	}
	if states != total {
		t.Errorf("%d run state events, want %d", states, total)
	}
}

func testConcurrentAddRuns(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	const batches, size = 8, 25

	// Batches race; each must still get a consecutive block of seqs.
	results := make([]store.AddResult, batches)
	errs := make([]error, batches)
	var wg sync.WaitGroup
	for b := 0; b < batches; b++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[b], errs[b] = s.AddRuns(ctx, "g1", makeRuns("g1", fmt.Sprintf("b%d", b), size),
				bothSpecs())
		}()
	}
	wg.Wait()
	var prevEvents []int64
	for b := 0; b < batches; b++ {
		if errs[b] != nil {
			t.Fatalf("batch %d: %v", b, errs[b])
		}
		prevEvents = append(prevEvents, results[b].PrevEventSeq)
		for i := 0; i < size; i++ {
			id := fmt.Sprintf("b%d-%d", b, i+1)
			if r := getRun(t, s, id); r.Seq != results[b].PrevRunSeq+int64(i)+1 {
				t.Errorf("run %s seq %d, want %d", id, r.Seq, results[b].PrevRunSeq+int64(i)+1)
			}
		}
	}
	slices.Sort(prevEvents)
	if !slices.Equal(prevEvents, []int64{0, 1, 2, 3, 4, 5, 6, 7}) {
		t.Errorf("PrevEventSeqs = %v, want 0..7", prevEvents)
	}
	g := getGroup(t, s, "g1")
	wantCounts(t, g, map[api.RunStatus]int64{api.StatusQueued: batches * size})
	if g.LastRunSeq != batches*size {
		t.Errorf("LastRunSeq = %d, want %d", g.LastRunSeq, batches*size)
	}
	checkGapless(t, s, "g1")
}

func testReopen(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := open(t)
	newGroup(t, s, "g1")
	addRuns(t, s, "g1", makeRuns("g1", "a", 3))
	claim(t, s, "n1", 2, at(2))
	f := completed("a-1", "n1", 3)
	f.Webhook = &store.Delivery{ID: "d-1", URL: "http://127.0.0.1:9/hook",
		Payload: json.RawMessage(`{"run":"a-1"}`)}
	finish(t, s, f)
	state := json.RawMessage(`{"upstream":"u-2"}`)
	if err := s.SaveCheckpoint(ctx, "a-2", state); err != nil {
		t.Fatalf("SaveCheckpoint: %v", err)
	}
	before := getGroup(t, s, "g1")
	beforeEvents := eventSummary(allEvents(t, s, "g1"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// The reopened store holds everything the first one committed.
	s = open(t)
	g := getGroup(t, s, "g1")
	if g.NumRuns != before.NumRuns || g.LastRunSeq != before.LastRunSeq ||
		g.LastEventSeq != before.LastEventSeq || !equalCounts(g.Counts, before.Counts) ||
		!g.ModifiedAt.Equal(before.ModifiedAt) || g.Metadata["batch"] != "b1" {
		t.Errorf("reopened group = %+v, want %+v", g, before)
	}
	if got := eventSummary(allEvents(t, s, "g1")); !slices.Equal(got, beforeEvents) {
		t.Errorf("reopened events = %v, want %v", got, beforeEvents)
	}
	if r := wantStatus(t, s, "a-1", api.StatusCompleted); !jsonEqual(r.Output, f.Output) ||
		!r.FinishedAt.Equal(at(3)) {
		t.Errorf("reopened a-1 = output %s finished %v", r.Output, r.FinishedAt)
	}
	r := wantStatus(t, s, "a-2", api.StatusRunning)
	if r.LeaseOwner != "n1" || !r.LeaseUntil.Equal(at(2).Add(time.Minute)) ||
		!jsonEqual(r.Checkpoint, state) || !jsonEqual(r.Spec, specJSON(specA)) {
		t.Errorf("reopened a-2 = %+v", r)
	}
	if ds := due(t, s, 100, 10); !slices.Equal(deliveryIDs(ds), []string{"d-1"}) {
		t.Errorf("reopened outbox = %v, want d-1", deliveryIDs(ds))
	}

	// Restart recovery and new work continue both cursors without gaps.
	n, events, err := s.Recover(ctx, "n1", at(10))
	if err != nil || n != 1 {
		t.Fatalf("Recover after reopen = %d, %v; want 1", n, err)
	}
	if len(events) != 1 || events[0].Seq != before.LastEventSeq+1 {
		t.Errorf("Recover events = %v, want one status event at %d", eventSummary(events),
			before.LastEventSeq+1)
	}
	res := addRuns(t, s, "g1", makeRuns("g1", "b", 2))
	if res.PrevRunSeq != 3 || getRun(t, s, "b-2").Seq != 5 {
		t.Errorf("after reopen: PrevRunSeq %d, b-2 seq %d; want 3, 5", res.PrevRunSeq,
			getRun(t, s, "b-2").Seq)
	}
	got := claim(t, s, "n1", 10, at(11))
	if !slices.Equal(ids(got), []string{"a-2", "a-3", "b-1", "b-2"}) {
		t.Fatalf("claim after reopen = %v, want a-2 a-3 b-1 b-2", ids(got))
	}
	if got[0].Attempt != 2 {
		t.Errorf("a-2 attempt = %d after recovery, want 2", got[0].Attempt)
	}
	checkGapless(t, s, "g1")
}
