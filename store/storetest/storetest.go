// Package storetest is the suite every store.Store implementation passes.
// It tests only through the interface, so the SQLite store and a PostgreSQL
// store run the very same cases:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { ... })
//	}
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// OpenFunc opens a store for test t. Calls with the same t (the same
// t.Name()) must reach the same stored data, so that a test can close the
// store and open it again; the first call for a name starts empty. The
// function registers its own cleanup, which must tolerate a store the test
// already closed.
type OpenFunc func(t *testing.T) store.Store

// Run runs every case of the suite as a parallel subtest of t.
func Run(t *testing.T, open OpenFunc) {
	cases := []struct {
		name string
		fn   func(*testing.T, OpenFunc)
	}{
		{"CreateGroup", testCreateGroup},
		{"CreateGroupDuplicate", testCreateGroupDuplicate},
		{"NotFound", testNotFound},
		{"AddRunsSeqsAndCounts", testAddRunsSeqsAndCounts},
		{"AddRunsDuplicateInBatch", testAddRunsDuplicateInBatch},
		{"AddRunsDuplicateOfStored", testAddRunsDuplicateOfStored},
		{"AddRunsUnknownSpec", testAddRunsUnknownSpec},
		{"AddRunsSharedSpec", testAddRunsSharedSpec},
		{"AddRunsEmpty", testAddRunsEmpty},
		{"StandaloneRuns", testStandaloneRuns},
		{"AddRunsClaimed", testAddRunsClaimed},
		{"AddRunsClaimedFinish", testAddRunsClaimedFinish},
		{"AddRunsClaimedRecover", testAddRunsClaimedRecover},
		{"GetRunRoundTrip", testGetRunRoundTrip},
		{"ListRunsPaging", testListRunsPaging},
		{"ClaimOrder", testClaimOrder},
		{"ClaimLimitAndProcessor", testClaimLimitAndProcessor},
		{"ClaimNotBefore", testClaimNotBefore},
		{"FinishApplied", testFinishApplied},
		{"FinishWrongNode", testFinishWrongNode},
		{"FinishNeverOverwrites", testFinishNeverOverwrites},
		{"FinishUnleased", testFinishUnleased},
		{"FinishNotTerminal", testFinishNotTerminal},
		{"FinishSeveralGroups", testFinishSeveralGroups},
		{"RetryRuns", testRetryRuns},
		{"ExtendLeases", testExtendLeases},
		{"RecoverNode", testRecoverNode},
		{"RecoverExpired", testRecoverExpired},
		{"CancelRunsByID", testCancelRunsByID},
		{"CancelRunsGroup", testCancelRunsGroup},
		{"Checkpoint", testCheckpoint},
		{"Deliveries", testDeliveries},
		{"EventsGapless", testEventsGapless},
		{"EventsRunFields", testEventsRunFields},
		{"ConcurrentClaimFinish", testConcurrentClaimFinish},
		{"ConcurrentAddRuns", testConcurrentAddRuns},
		{"Reopen", testReopen},
		{"Budget", testBudget},
		{"CachedOutput", testCachedOutput},
		{"QueueDepth", testQueueDepth},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, open)
		})
	}
}

// t0 is the base of the times the suite stores: UTC, with microseconds.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC)

// at returns t0 plus n seconds.
func at(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }

const (
	specA = "spec-a"
	specB = "spec-b"
)

// specJSON is the spec stored under hash.
func specJSON(hash string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"output_schema":{"type":"text","description":%q}}`, hash))
}

// bothSpecs maps the suite's spec hashes to their JSON.
func bothSpecs() map[string]json.RawMessage {
	return map[string]json.RawMessage{specA: specJSON(specA), specB: specJSON(specB)}
}

// newGroup creates a group with metadata.
func newGroup(t *testing.T, s store.Store, id string) store.Group {
	t.Helper()
	g := store.Group{ID: id, Owner: "owner-1", Metadata: api.Metadata{"batch": "b1"},
		CreatedAt: at(0), ModifiedAt: at(0)}
	if err := s.CreateGroup(context.Background(), g); err != nil {
		t.Fatalf("CreateGroup(%s): %v", id, err)
	}
	return g
}

// makeRuns returns n queued runs of processor "lite" named prefix-1 ...
func makeRuns(groupID, prefix string, n int) []store.Run {
	runs := make([]store.Run, n)
	for i := range runs {
		runs[i] = store.Run{
			ID:        fmt.Sprintf("%s-%d", prefix, i+1),
			GroupID:   groupID,
			Owner:     "owner-1",
			Processor: "lite",
			Status:    api.StatusQueued,
			Input:     json.RawMessage(fmt.Sprintf(`{"input":"row %d","processor":"lite"}`, i+1)),
			SpecHash:  specA,
			CreatedAt: at(1),
		}
	}
	return runs
}

// addRuns stores runs and fails the test on error.
func addRuns(t *testing.T, s store.Store, groupID string, runs []store.Run) store.AddResult {
	t.Helper()
	res, err := s.AddRuns(context.Background(), groupID, runs, bothSpecs())
	if err != nil {
		t.Fatalf("AddRuns(%q, %d runs): %v", groupID, len(runs), err)
	}
	return res
}

// claim claims up to limit runs of "lite" for node at time now.
func claim(t *testing.T, s store.Store, node string, limit int, now time.Time) []store.Run {
	t.Helper()
	runs, err := s.ClaimRuns(context.Background(), store.Claim{Processor: "lite", Node: node,
		Limit: limit, Now: now, LeaseUntil: now.Add(time.Minute)})
	if err != nil {
		t.Fatalf("ClaimRuns(%s, %d): %v", node, limit, err)
	}
	return runs
}

// finish applies finishes and fails the test on error.
func finish(t *testing.T, s store.Store, fs ...store.Finish) store.FinishResult {
	t.Helper()
	res, err := s.FinishRuns(context.Background(), fs)
	if err != nil {
		t.Fatalf("FinishRuns: %v", err)
	}
	return res
}

// completed is a successful finish of run by node at time at(sec).
func completed(run, node string, sec int) store.Finish {
	return store.Finish{RunID: run, Node: node, Status: api.StatusCompleted,
		Output: json.RawMessage(fmt.Sprintf(`{"type":"text","content":"done %s"}`, run)),
		Usage:  json.RawMessage(`{"tokens":3}`), At: at(sec)}
}

// getGroup reads a group and fails the test on error.
func getGroup(t *testing.T, s store.Store, id string) store.Group {
	t.Helper()
	g, err := s.GetGroup(context.Background(), id)
	if err != nil {
		t.Fatalf("GetGroup(%s): %v", id, err)
	}
	return g
}

// getRun reads a run and fails the test on error.
func getRun(t *testing.T, s store.Store, id string) store.Run {
	t.Helper()
	r, err := s.GetRun(context.Background(), id)
	if err != nil {
		t.Fatalf("GetRun(%s): %v", id, err)
	}
	return r
}

// allEvents reads a group's whole event log in pages of 7.
func allEvents(t *testing.T, s store.Store, groupID string) []store.Event {
	t.Helper()
	var out []store.Event
	after := int64(0)
	for {
		page, err := s.ListEvents(context.Background(), groupID, after, 7)
		if err != nil {
			t.Fatalf("ListEvents(%s, %d): %v", groupID, after, err)
		}
		if len(page) == 0 {
			return out
		}
		out = append(out, page...)
		after = page[len(page)-1].Seq
	}
}

// wantCounts checks a group's counters.
func wantCounts(t *testing.T, g store.Group, want map[api.RunStatus]int64) {
	t.Helper()
	if !equalCounts(g.Counts, want) {
		t.Errorf("group %s counts = %v, want %v", g.ID, g.Counts, want)
	}
	var sum int64
	for _, n := range want {
		sum += n
	}
	if g.NumRuns != sum {
		t.Errorf("group %s NumRuns = %d, want %d", g.ID, g.NumRuns, sum)
	}
}

// equalCounts compares counters, treating absent and zero alike.
func equalCounts(got, want map[api.RunStatus]int64) bool {
	for _, s := range api.AllStatuses {
		if got[s] != want[s] {
			return false
		}
	}
	return true
}

// wantStatus checks a run's stored status.
func wantStatus(t *testing.T, s store.Store, id string, want api.RunStatus) store.Run {
	t.Helper()
	r := getRun(t, s, id)
	if r.Status != want {
		t.Errorf("run %s status = %s, want %s", id, r.Status, want)
	}
	return r
}

// wantNotFound checks that err wraps store.ErrNotFound.
func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("%s: error = %v, want store.ErrNotFound", what, err)
	}
}

// ids lists the ids of runs.
func ids(runs []store.Run) []string {
	out := make([]string, len(runs))
	for i := range runs {
		out[i] = runs[i].ID
	}
	return out
}

// eventSummary names events compactly for comparisons: "3:state:r-1".
func eventSummary(evs []store.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		switch ev.Kind {
		case store.EventRunState:
			out[i] = fmt.Sprintf("%d:state:%s", ev.Seq, ev.RunID)
		case store.EventGroupStatus:
			out[i] = fmt.Sprintf("%d:status", ev.Seq)
		default:
			out[i] = fmt.Sprintf("%d:%s", ev.Seq, ev.Kind)
		}
	}
	return out
}

// jsonEqual compares two JSON documents by value.
func jsonEqual(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
