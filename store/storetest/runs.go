package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

func testGetRunRoundTrip(t *testing.T, open OpenFunc) {
	s := open(t)
	newGroup(t, s, "g1")
	local := time.FixedZone("UTC+2", 2*3600)
	in := store.Run{
		ID: "r1", GroupID: "g1", Owner: "owner-7", Processor: "core",
		Input:      json.RawMessage(`{"input":{"company":"Acme"},"processor":"core"}`),
		SpecHash:   specB,
		Warnings:   json.RawMessage(`[{"type":"warning","message":"w","detail":null}]`),
		Checkpoint: json.RawMessage(`{"upstream":"u-1"}`),
		CreatedAt:  time.Date(2026, 3, 1, 14, 0, 0, 654321000, local),
		ModifiedAt: time.Date(2026, 3, 1, 14, 0, 1, 1000, local),
		NotBefore:  time.Date(2026, 3, 1, 14, 0, 2, 999999000, local),
	}
	addRuns(t, s, "g1", []store.Run{in})
	got := getRun(t, s, "r1")

	if got.ID != in.ID || got.GroupID != "g1" || got.Seq != 1 || got.Owner != in.Owner ||
		got.Processor != in.Processor || got.SpecHash != specB || got.Status != api.StatusQueued {
		t.Errorf("run = %+v", got)
	}
	for _, c := range []struct {
		name      string
		got, want json.RawMessage
	}{{"Input", got.Input, in.Input}, {"Warnings", got.Warnings, in.Warnings},
		{"Checkpoint", got.Checkpoint, in.Checkpoint}, {"Spec", got.Spec, specJSON(specB)}} {
		if !jsonEqual(c.got, c.want) {
			t.Errorf("%s = %s, want %s", c.name, c.got, c.want)
		}
	}
	if got.Error != nil || got.Output != nil || got.Usage != nil || got.Cached {
		t.Errorf("new run has outcome: error %s output %s usage %s cached %v", got.Error,
			got.Output, got.Usage, got.Cached)
	}
	for _, c := range []struct {
		name      string
		got, want time.Time
	}{{"CreatedAt", got.CreatedAt, in.CreatedAt}, {"ModifiedAt", got.ModifiedAt, in.ModifiedAt},
		{"NotBefore", got.NotBefore, in.NotBefore}} {
		if !c.got.Equal(c.want) || c.got.Location() != time.UTC {
			t.Errorf("%s = %v, want %v in UTC", c.name, c.got, c.want.UTC())
		}
	}
	if !got.FinishedAt.IsZero() || !got.LeaseUntil.IsZero() || got.LeaseOwner != "" {
		t.Errorf("new run has FinishedAt %v, lease %q until %v", got.FinishedAt, got.LeaseOwner,
			got.LeaseUntil)
	}
}

func testListRunsPaging(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	newGroup(t, s, "g2")
	addRuns(t, s, "g1", makeRuns("g1", "a", 15))
	addRuns(t, s, "g2", makeRuns("g2", "other", 3))
	addRuns(t, s, "g1", makeRuns("g1", "b", 10))

	// Pages of 10 follow seq order without gaps or repeats.
	var got []int64
	after := int64(0)
	for pages := 0; ; pages++ {
		page, err := s.ListRuns(ctx, "g1", after, "", 10)
		if err != nil {
			t.Fatalf("ListRuns: %v", err)
		}
		if len(page) > 10 {
			t.Fatalf("page of %d runs, limit 10", len(page))
		}
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			if r.GroupID != "g1" {
				t.Errorf("ListRuns(g1) returned run %s of %s", r.ID, r.GroupID)
			}
			got = append(got, r.Seq)
		}
		after = page[len(page)-1].Seq
	}
	want := make([]int64, 25)
	for i := range want {
		want[i] = int64(i + 1)
	}
	if !slices.Equal(got, want) {
		t.Errorf("seqs = %v, want 1..25", got)
	}
	page, err := s.ListRuns(ctx, "g1", 15, "", 1)
	if err != nil || len(page) != 1 || page[0].ID != "b-1" {
		t.Errorf("ListRuns(after 15, limit 1) = %v, %v; want b-1", ids(page), err)
	}

	// A status filter keeps seq order and paging.
	claimed := claim(t, s, "n1", 4, at(2))
	finish(t, s, completed(claimed[1].ID, "n1", 3), completed(claimed[3].ID, "n1", 3))
	done, err := s.ListRuns(ctx, "g1", 0, api.StatusCompleted, 10)
	if err != nil {
		t.Fatalf("ListRuns(completed): %v", err)
	}
	if !slices.Equal(ids(done), []string{"a-2", "a-4"}) {
		t.Errorf("completed runs = %v, want a-2 a-4", ids(done))
	}
	if len(done) > 0 && !jsonEqual(done[0].Output, completed("a-2", "", 0).Output) {
		t.Errorf("listed output = %s", done[0].Output)
	}
	done, err = s.ListRuns(ctx, "g1", 2, api.StatusCompleted, 10)
	if err != nil || !slices.Equal(ids(done), []string{"a-4"}) {
		t.Errorf("completed after seq 2 = %v, %v; want a-4", ids(done), err)
	}
	queued, err := s.ListRuns(ctx, "g1", 0, api.StatusQueued, 100)
	if err != nil || len(queued) != 21 || queued[0].ID != "a-5" {
		t.Errorf("queued runs = %d first %v, %v; want 21 from a-5", len(queued), ids(queued), err)
	}
}

func testClaimOrder(t *testing.T, open OpenFunc) {
	s := open(t)
	newGroup(t, s, "g1")
	newGroup(t, s, "g2")
	addRuns(t, s, "g1", makeRuns("g1", "a", 3))
	addRuns(t, s, "g2", makeRuns("g2", "b", 2))
	addRuns(t, s, "", makeRuns("", "solo", 1))
	addRuns(t, s, "g1", makeRuns("g1", "c", 2))

	// Claims take the oldest runs first, across groups.
	now := at(10)
	first := claim(t, s, "n1", 4, now)
	if !slices.Equal(ids(first), []string{"a-1", "a-2", "a-3", "b-1"}) {
		t.Errorf("first claim = %v, want a-1 a-2 a-3 b-1", ids(first))
	}
	for _, r := range first {
		if r.Status != api.StatusRunning || r.Attempt != 1 || r.LeaseOwner != "n1" ||
			!r.LeaseUntil.Equal(now.Add(time.Minute)) || !r.ModifiedAt.Equal(now) {
			t.Errorf("claimed run %s = %s attempt %d lease %s until %v modified %v", r.ID,
				r.Status, r.Attempt, r.LeaseOwner, r.LeaseUntil, r.ModifiedAt)
		}
		if !jsonEqual(r.Spec, specJSON(specA)) || len(r.Input) == 0 {
			t.Errorf("claimed run %s spec %s input %s, want both", r.ID, r.Spec, r.Input)
		}
	}
	second := claim(t, s, "n2", 10, now)
	if !slices.Equal(ids(second), []string{"b-2", "solo-1", "c-1", "c-2"}) {
		t.Errorf("second claim = %v, want b-2 solo-1 c-1 c-2", ids(second))
	}
	if third := claim(t, s, "n1", 10, now); len(third) != 0 {
		t.Errorf("claim with nothing queued = %v", ids(third))
	}

	// Claims move the counters without logging events.
	g1 := getGroup(t, s, "g1")
	wantCounts(t, g1, map[api.RunStatus]int64{api.StatusRunning: 5})
	if g1.LastEventSeq != 2 {
		t.Errorf("g1 LastEventSeq = %d after claims, want 2", g1.LastEventSeq)
	}
	wantCounts(t, getGroup(t, s, "g2"), map[api.RunStatus]int64{api.StatusRunning: 2})
	r := wantStatus(t, s, "c-2", api.StatusRunning)
	if r.LeaseOwner != "n2" || r.Attempt != 1 {
		t.Errorf("stored claimed run = lease %s attempt %d, want n2 1", r.LeaseOwner, r.Attempt)
	}
}

func testClaimLimitAndProcessor(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	runs := makeRuns("g1", "a", 6)
	for i := range runs {
		if i%2 == 1 {
			runs[i].Processor = "ultra"
		}
	}
	addRuns(t, s, "g1", runs)

	if got := claim(t, s, "n1", 0, at(5)); len(got) != 0 {
		t.Errorf("claim with limit 0 = %v", ids(got))
	}
	if got := claim(t, s, "n1", 2, at(5)); !slices.Equal(ids(got), []string{"a-1", "a-3"}) {
		t.Errorf("claim lite limit 2 = %v, want a-1 a-3", ids(got))
	}
	ultra, err := s.ClaimRuns(ctx, store.Claim{Processor: "ultra", Node: "n1", Limit: 10,
		Now: at(5), LeaseUntil: at(65)})
	if err != nil || !slices.Equal(ids(ultra), []string{"a-2", "a-4", "a-6"}) {
		t.Errorf("claim ultra = %v, %v; want a-2 a-4 a-6", ids(ultra), err)
	}
	none, err := s.ClaimRuns(ctx, store.Claim{Processor: "base", Node: "n1", Limit: 10,
		Now: at(5), LeaseUntil: at(65)})
	if err != nil || len(none) != 0 {
		t.Errorf("claim of a processor without runs = %v, %v", ids(none), err)
	}
	wantCounts(t, getGroup(t, s, "g1"),
		map[api.RunStatus]int64{api.StatusRunning: 5, api.StatusQueued: 1})
}

func testClaimNotBefore(t *testing.T, open OpenFunc) {
	s := open(t)
	newGroup(t, s, "g1")
	runs := makeRuns("g1", "a", 3)
	runs[0].NotBefore = at(100)
	runs[2].NotBefore = at(50)
	addRuns(t, s, "g1", runs)

	if got := claim(t, s, "n1", 10, at(10)); !slices.Equal(ids(got), []string{"a-2"}) {
		t.Errorf("claim at 10 = %v, want a-2", ids(got))
	}
	if got := claim(t, s, "n1", 10, at(50)); !slices.Equal(ids(got), []string{"a-3"}) {
		t.Errorf("claim at 50 = %v, want a-3 (NotBefore reached)", ids(got))
	}
	if got := claim(t, s, "n1", 10, at(99)); len(got) != 0 {
		t.Errorf("claim at 99 = %v, want none", ids(got))
	}
	if got := claim(t, s, "n1", 10, at(101)); !slices.Equal(ids(got), []string{"a-1"}) {
		t.Errorf("claim at 101 = %v, want a-1", ids(got))
	}
}

func testCheckpoint(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	addRuns(t, s, "g1", makeRuns("g1", "a", 2))
	claimed := claim(t, s, "n1", 1, at(2))
	if claimed[0].Checkpoint != nil {
		t.Errorf("first claim checkpoint = %s, want nil", claimed[0].Checkpoint)
	}

	// A checkpoint survives a retry and comes back with the next claim.
	state := json.RawMessage(`{"upstream_run":"trun_up_1","step":2}`)
	if err := s.SaveCheckpoint(ctx, "a-1", state); err != nil {
		t.Fatalf("SaveCheckpoint: %v", err)
	}
	if r := getRun(t, s, "a-1"); !jsonEqual(r.Checkpoint, state) {
		t.Errorf("stored checkpoint = %s, want %s", r.Checkpoint, state)
	}
	if err := s.RetryRuns(ctx, []store.Retry{{RunID: "a-1", Node: "n1", At: at(3)}}); err != nil {
		t.Fatalf("RetryRuns: %v", err)
	}
	again := claim(t, s, "n2", 1, at(4))
	if len(again) != 1 || again[0].ID != "a-1" || !jsonEqual(again[0].Checkpoint, state) ||
		again[0].Attempt != 2 {
		t.Fatalf("reclaim = %+v, want a-1 attempt 2 with checkpoint", again)
	}

	// A new checkpoint replaces the old; other runs keep none.
	next := json.RawMessage(`{"upstream_run":"trun_up_2"}`)
	if err := s.SaveCheckpoint(ctx, "a-1", next); err != nil {
		t.Fatalf("SaveCheckpoint: %v", err)
	}
	if r := getRun(t, s, "a-1"); !jsonEqual(r.Checkpoint, next) {
		t.Errorf("replaced checkpoint = %s, want %s", r.Checkpoint, next)
	}
	if r := getRun(t, s, "a-2"); r.Checkpoint != nil {
		t.Errorf("other run checkpoint = %s", r.Checkpoint)
	}
}

func testExtendLeases(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	addRuns(t, s, "g1", makeRuns("g1", "a", 3))
	claim(t, s, "n1", 2, at(0)) // a-1, a-2 until at(60)
	claim(t, s, "n2", 1, at(0)) // a-3

	err := s.ExtendLeases(ctx, "n1", []string{"a-1", "a-2", "a-3", "missing"}, at(600))
	if err != nil {
		t.Fatalf("ExtendLeases: %v", err)
	}
	for _, c := range []struct {
		id    string
		until time.Time
	}{{"a-1", at(600)}, {"a-2", at(600)}, {"a-3", at(60)}} {
		if r := getRun(t, s, c.id); !r.LeaseUntil.Equal(c.until) {
			t.Errorf("run %s lease until %v, want %v", c.id, r.LeaseUntil, c.until)
		}
	}

	// An extended lease is not expired for Recover.
	if n, _, err := s.Recover(ctx, "", at(300)); err != nil || n != 1 {
		t.Errorf("Recover at 300 = %d, %v; want 1 (only a-3 expired)", n, err)
	}
	wantStatus(t, s, "a-1", api.StatusRunning)
	wantStatus(t, s, "a-3", api.StatusQueued)

	// A finished run's lease is gone and cannot be extended.
	finish(t, s, completed("a-1", "n1", 5))
	if err := s.ExtendLeases(ctx, "n1", []string{"a-1"}, at(900)); err != nil {
		t.Fatalf("ExtendLeases: %v", err)
	}
	if r := getRun(t, s, "a-1"); r.LeaseOwner != "" || !r.LeaseUntil.IsZero() {
		t.Errorf("finished run lease = %q until %v, want none", r.LeaseOwner, r.LeaseUntil)
	}
}

// runIDs names n runs prefix-1 ... prefix-n.
func runIDs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i+1)
	}
	return out
}
