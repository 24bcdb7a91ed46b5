package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

func testBudget(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	g := store.Group{ID: "g1", Owner: "owner-1", CreatedAt: at(0), MaxCost: 1.0}
	if err := s.CreateGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	priced := func(prefix string, n int, each float64) []store.Run {
		runs := makeRuns("g1", prefix, n)
		for i := range runs {
			runs[i].Cost = each
		}
		return runs
	}

	// 60 runs at 1 cent fit; 50 more would pass the dollar and are refused
	// whole; 40 more fit exactly.
	res := addRuns(t, s, "g1", priced("a", 60, 0.01))
	if res.Group.MaxCost != 1.0 || res.Group.Cost < 0.5999 || res.Group.Cost > 0.6001 {
		t.Fatalf("after 60 runs: cost %v of max %v, want 0.60 of 1", res.Group.Cost, res.Group.MaxCost)
	}
	_, err := s.AddRuns(ctx, "g1", priced("b", 50, 0.01), bothSpecs())
	if !errors.Is(err, store.ErrBudget) {
		t.Fatalf("AddRuns past the budget: err = %v, want ErrBudget", err)
	}
	got := getGroup(t, s, "g1")
	if got.NumRuns != 60 || got.Cost > 0.6001 {
		t.Fatalf("refused batch left %d runs, cost %v; want 60, 0.60", got.NumRuns, got.Cost)
	}
	addRuns(t, s, "g1", priced("c", 40, 0.01))
	if got := getGroup(t, s, "g1"); got.NumRuns != 100 || got.Cost < 0.9999 {
		t.Fatalf("after filling the budget: %d runs, cost %v; want 100, 1.00", got.NumRuns, got.Cost)
	}

	// A group without a budget takes any cost.
	newGroup(t, s, "g2")
	runs := makeRuns("g2", "d", 3)
	for i := range runs {
		runs[i].Cost = 100
	}
	if res := addRuns(t, s, "g2", runs); res.Group.Cost != 300 {
		t.Fatalf("unbudgeted group cost = %v, want 300", res.Group.Cost)
	}
}

func testCachedOutput(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	runs := makeRuns("g1", "r", 3)
	runs[0].CacheKey, runs[1].CacheKey = "k1", "k1"
	addRuns(t, s, "g1", runs)
	claimed, err := s.ClaimRuns(ctx, store.Claim{Processor: "lite", Node: "n1", Limit: 3, Now: at(2), LeaseUntil: at(100)})
	if err != nil || len(claimed) != 3 {
		t.Fatalf("claim: %d runs, %v", len(claimed), err)
	}
	if _, ok, err := s.CachedOutput(ctx, "lite", "k1", at(0)); err != nil || ok {
		t.Fatalf("before any completion: ok %v, err %v; want none", ok, err)
	}
	finish := func(id string, status api.RunStatus, out string, when int) {
		t.Helper()
		f := store.Finish{RunID: id, Node: "n1", Status: status, At: at(when)}
		if out != "" {
			f.Output = json.RawMessage(out)
		} else {
			f.Error = json.RawMessage(`{"ref_id":"x","message":"failed"}`)
		}
		if _, err := s.FinishRuns(ctx, []store.Finish{f}); err != nil {
			t.Fatal(err)
		}
	}
	finish("r-1", api.StatusCompleted, `{"type":"text","content":"old"}`, 10)
	finish("r-2", api.StatusFailed, "", 20)
	finish("r-3", api.StatusCompleted, `{"type":"text","content":"other key"}`, 30)

	out, ok, err := s.CachedOutput(ctx, "lite", "k1", at(5))
	if err != nil || !ok || string(out) != `{"type":"text","content":"old"}` {
		t.Fatalf("cached output = %s, %v, %v; want the completed run's", out, ok, err)
	}
	if _, ok, _ := s.CachedOutput(ctx, "lite", "k1", at(11)); ok {
		t.Fatal("an output older than since was served")
	}
	if _, ok, _ := s.CachedOutput(ctx, "base", "k1", at(0)); ok {
		t.Fatal("another processor's output was served")
	}
	if _, ok, _ := s.CachedOutput(ctx, "lite", "", at(0)); ok {
		t.Fatal("an empty cache key matched")
	}
}

func testQueueDepth(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	runs := makeRuns("g1", "r", 5)
	runs[4].Processor = "base"
	addRuns(t, s, "g1", runs)
	if _, err := s.ClaimRuns(ctx, store.Claim{Processor: "lite", Node: "n1", Limit: 1, Now: at(2), LeaseUntil: at(100)}); err != nil {
		t.Fatal(err)
	}
	depth, err := s.QueueDepth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if depth["lite"] != 3 || depth["base"] != 1 || len(depth) != 2 {
		t.Fatalf("queue depth = %v, want lite 3, base 1", depth)
	}
}
