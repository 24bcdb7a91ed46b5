package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
	"github.com/taskpipe/taskpipe/processors"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

func TestEngine_GroupBudget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "engine.db"))
	if err != nil {
		t.Fatal(err)
	}
	backends := processors.Default(nil)
	priced := backends["synthetic"]
	priced.PricePerRun = 0.01
	backends["priced"] = priced
	eng, err := engine.New(engine.Options{Store: st, Backends: backends, Node: "n", MaxGroupCost: 5})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Stop(ctx); _ = st.Close() })

	// The server caps every group at $5; this one asks for $2.
	g, err := eng.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{Metadata: api.Metadata{api.MetadataMaxCost: 2.0}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng.AddRuns(ctx, g.TaskGroupID, api.TaskGroupRunRequest{Inputs: inputs(150, "priced")}); err != nil {
		t.Fatalf("first $1.50: %v", err)
	}
	_, err = eng.AddRuns(ctx, g.TaskGroupID, api.TaskGroupRunRequest{Inputs: inputs(100, "priced")})
	if !errors.Is(err, api.ErrPaymentRequired) || !strings.Contains(err.Error(), "budget") {
		t.Fatalf("$1.00 more past a $2 cap: err = %v, want payment required naming the budget", err)
	}
	got, _ := eng.GetTaskGroup(ctx, g.TaskGroupID)
	if got.Status.NumTaskRuns != 150 {
		t.Fatalf("refused batch left %d runs, want 150", got.Status.NumTaskRuns)
	}
	// Free runs never hit the cap; a bad cap is refused.
	if _, err := eng.AddRuns(ctx, g.TaskGroupID, api.TaskGroupRunRequest{Inputs: inputs(1000, "synthetic")}); err != nil {
		t.Fatalf("free runs: %v", err)
	}
	if _, err := eng.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{Metadata: api.Metadata{api.MetadataMaxCost: "lots"}}); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("non-numeric cap: err = %v, want invalid", err)
	}
}

func TestEngine_ResultCache(t *testing.T) {
	t.Parallel()
	p := &funcProcessor{fn: func(_ context.Context, j engine.Job) engine.Outcome {
		return engine.Outcome{Output: jsonOutput(string(j.Input.Input))}
	}}
	h := newHarness(t, map[string]engine.Backend{
		"cached":   {Processor: p, CacheMaxAge: time.Hour},
		"uncached": {Processor: p},
	})
	ctx := context.Background()
	run := func(processor, input string) (api.TaskRunResult, string) {
		t.Helper()
		r, err := h.eng.CreateRun(ctx, api.TaskRunInput{Input: json.RawMessage(input), Processor: processor, TaskSpec: companySpec})
		if err != nil {
			t.Fatal(err)
		}
		res, err := h.eng.GetRunResult(ctx, r.RunID, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return res, r.RunID
	}
	first, firstID := run("cached", `{"company": "Acme"}`)
	second, secondID := run("cached", `{"company":"Acme"}`) // same input, other spacing
	if p.executions(firstID) != 1 || p.executions(secondID) != 0 {
		t.Fatalf("executions = %d, %d; want the second served from the cache",
			p.executions(firstID), p.executions(secondID))
	}
	if !second.Run.Cached || first.Run.Cached {
		t.Fatalf("cached marks = %v, %v; want false, true", first.Run.Cached, second.Run.Cached)
	}
	if string(second.Output.Content) != string(first.Output.Content) {
		t.Fatalf("cached output %s, want %s", second.Output.Content, first.Output.Content)
	}
	if _, id := run("cached", `{"company":"Other"}`); p.executions(id) != 1 {
		t.Fatal("a different input was served from the cache")
	}
	if _, id := run("uncached", `{"company":"Acme"}`); p.executions(id) != 1 {
		t.Fatal("a processor without cache was served from the cache")
	}
}
