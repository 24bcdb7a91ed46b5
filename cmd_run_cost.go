package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/taskpipe/taskpipe/engine"
	"github.com/taskpipe/taskpipe/pipeline"
	"github.com/taskpipe/taskpipe/processors"
	"github.com/taskpipe/taskpipe/specs"
)

// costEstimate is what `taskpipe run --estimate` prints.
type costEstimate struct {
	Processor string `json:"processor"`
	// Rows are the rows a run would submit; Skipped and Invalid the rows
	// it would not (settled by an earlier run, or invalid input).
	Rows        int64   `json:"rows"`
	Skipped     int64   `json:"skipped_rows"`
	Invalid     int64   `json:"invalid_rows"`
	PricePerRun float64 `json:"price_per_run_usd"`
	PriceKnown  bool    `json:"price_known"`
	MaxCost     float64 `json:"max_cost_usd"`
}

// Total is the cost of running every row to submit once.
func (e costEstimate) Total() float64 { return float64(e.Rows) * e.PricePerRun }

// estimateCost counts the rows the run would submit and prices them with the
// processor's price: from the processor file for the embedded engine, else
// from Parallel's published prices (a server's own prices are not known
// here unless --processors names its file).
func (c *runCmd) estimateCost(ctx context.Context, p *specs.Pipeline, src pipeline.Source,
	backends map[string]engine.Backend) (costEstimate, error) {
	est := costEstimate{Processor: p.Task.Processor, MaxCost: c.MaxCost}
	if b, ok := backends[est.Processor]; ok && (p.Target.Engine == specs.EngineEmbedded || c.Processors != "") {
		est.PricePerRun, est.PriceKnown = b.PricePerRun, true
	} else if price, ok := processors.EstimateCost(est.Processor, 1); ok {
		est.PricePerRun, est.PriceKnown = price, true
	}

	// Count the rows a run would submit: rows an earlier run settled with
	// the same input and spec are skipped and cost nothing.
	n, err := pipeline.CountPending(ctx, pipeline.PendingOptions{
		Source: src, Key: p.Key, Mapping: p.Mapping, TaskSpec: p.TaskSpec,
		Target:   pipeline.TargetID(p.Target, c.URL),
		StateDir: p.Resolve(p.Target.StateDir), Limit: c.Limit, RetryFailed: c.RetryFailed,
	})
	if err != nil {
		return est, err
	}
	est.Rows, est.Skipped, est.Invalid = n.Submit, n.Skipped, n.Invalid
	return est, nil
}

// checkBudget refuses a run whose estimate passes --max-cost.
func (c *runCmd) checkBudget(est costEstimate) error {
	if c.MaxCost <= 0 {
		return nil
	}
	if !est.PriceKnown {
		return withExitCode(exitUsage, fmt.Errorf(
			"run: --max-cost: the price of processor %q is unknown; give it price_per_run in --processors", est.Processor))
	}
	if est.Total() > c.MaxCost+1e-9 {
		return withExitCode(exitUsage, fmt.Errorf(
			"run: %d rows on %s would cost up to $%.2f, more than --max-cost $%.2f "+
				"(%d rows done by an earlier run are skipped); nothing was submitted",
			est.Rows, est.Processor, est.Total(), c.MaxCost, est.Skipped))
	}
	return nil
}

// printEstimate writes the estimate for a person or, with asJSON, a program.
func printEstimate(w io.Writer, est costEstimate, asJSON bool) error {
	if asJSON {
		out := struct {
			costEstimate
			Total float64 `json:"total_usd"`
		}{est, est.Total()}
		return json.NewEncoder(w).Encode(out)
	}
	if !est.PriceKnown {
		_, err := fmt.Fprintf(w, "%d rows on %s: price unknown (set price_per_run in --processors); "+
			"%d rows done by an earlier run are skipped\n", est.Rows, est.Processor, est.Skipped)
		return err
	}
	_, err := fmt.Fprintf(w, "%d rows × $%.4f on %s = $%.2f at most "+
		"(%d rows done by an earlier run are skipped and cost nothing)\n",
		est.Rows, est.PricePerRun, est.Processor, est.Total(), est.Skipped)
	return err
}
