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
	Processor   string  `json:"processor"`
	Rows        int64   `json:"rows"`
	PricePerRun float64 `json:"price_per_run_usd"`
	PriceKnown  bool    `json:"price_known"`
	MaxCost     float64 `json:"max_cost_usd"`
}

// Total is the cost of running every row once.
func (e costEstimate) Total() float64 { return float64(e.Rows) * e.PricePerRun }

// estimateCost counts the rows the run would read and prices them with the
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

	// Count the rows, from file metadata when the source can.
	if cnt, ok := src.(pipeline.Counter); ok {
		n, err := cnt.Count(ctx)
		if err != nil {
			return est, err
		}
		est.Rows = n
	} else {
		err := src.Read(ctx, 10000, func(b pipeline.Batch) error {
			est.Rows += int64(len(b.Rows))
			return nil
		})
		if err != nil {
			return est, err
		}
	}
	if c.Limit > 0 {
		est.Rows = min(est.Rows, c.Limit)
	}
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
			"run: %d rows on %s would cost up to $%.2f, more than --max-cost $%.2f; nothing was submitted",
			est.Rows, est.Processor, est.Total(), c.MaxCost))
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
		_, err := fmt.Fprintf(w, "%d rows on %s: price unknown (set price_per_run in --processors)\n",
			est.Rows, est.Processor)
		return err
	}
	_, err := fmt.Fprintf(w, "%d rows × $%.4f on %s = $%.2f at most "+
		"(rows completed by an earlier run of this pipeline are skipped and cost nothing)\n",
		est.Rows, est.PricePerRun, est.Processor, est.Total())
	return err
}
