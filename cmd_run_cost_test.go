package main

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

// TestRun_CostCountsOnlyRowsToSubmit runs 30 of 50 rows, then checks that
// --estimate and --max-cost price only the 20 rows left, not all 50.
func TestRun_CostCountsOnlyRowsToSubmit(t *testing.T) {
	f := newResumeFixture(t, 50, "", 0)
	procs, err := os.ReadFile(f.processors)
	if err != nil {
		t.Fatal(err)
	}
	write(t, f.processors, strings.Replace(string(procs), "    kind: synthetic\n",
		"    kind: synthetic\n    price_per_run: 0.01\n", 1))
	run := func(c runCmd) error {
		c.Pipeline, c.Processors, c.Progress = f.spec, f.processors, "none"
		return c.Run(&CLI{}, quietLogger())
	}
	captureStdout(t, func() error { return run(runCmd{Limit: 30}) })

	out := captureStdout(t, func() error { return run(runCmd{Estimate: true, JSON: true}) })
	var est struct {
		Rows    int64   `json:"rows"`
		Skipped int64   `json:"skipped_rows"`
		Total   float64 `json:"total_usd"`
	}
	if err := json.Unmarshal(out, &est); err != nil {
		t.Fatalf("estimate %q: %v", out, err)
	}
	if est.Rows != 20 || est.Skipped != 30 || est.Total < 0.199 || est.Total > 0.201 {
		t.Errorf("estimate = %+v, want 20 rows, 30 skipped, $0.20", est)
	}

	// A cap below the 20 new rows is refused and says what was skipped;
	// one above them lets the run go.
	err = run(runCmd{MaxCost: 0.1})
	var ec *exitCodeError
	want := "run: 20 rows on synthetic would cost up to $0.20, more than --max-cost $0.10 " +
		"(30 rows done by an earlier run are skipped); nothing was submitted"
	if !errors.As(err, &ec) || ec.code != exitUsage || err.Error() != want {
		t.Errorf("--max-cost 0.1: %v, want exit %d and %q", err, exitUsage, want)
	}
	out = captureStdout(t, func() error { return run(runCmd{MaxCost: 0.25, JSON: true}) })
	var sum struct{ Submitted, Skipped int64 }
	if err := json.Unmarshal(out, &sum); err != nil || sum.Submitted != 20 || sum.Skipped != 30 {
		t.Errorf("--max-cost 0.25: summary %s (%v), want 20 submitted, 30 skipped", out, err)
	}
}
