// Package bench measures taskpipe against the targets in docs/benchmarks.md:
// engine throughput, many slow runs, runs-stream throughput and the
// pipeline. Each measurement is a function usable from `taskpipe bench` and
// from Go benchmarks, so that the figures in the docs can be reproduced
// either way.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/taskpipe/taskpipe/api"
)

// GroupOptions describe one task-group measurement.
type GroupOptions struct {
	// Runs is the number of runs in the group.
	Runs int
	// Chunk is the number of runs per add-runs call (at most 1,000).
	Chunk int
	// Adders is the number of add-runs calls in flight at once (default 4).
	Adders int
	// Processor names the processor of every run.
	Processor string
}

// GroupResult is what one measurement found.
type GroupResult struct {
	Runs      int
	Completed int
	// Added is when the last add-runs call returned, Done when the events
	// stream reported the group inactive, Streamed when the last output
	// was read from the runs stream; all measured from the first add.
	Added, Done, Streamed time.Duration
	// StreamedBytes is the size of the outputs read back.
	StreamedBytes int64
	// PeakRSS is the process's peak resident set, in bytes (0 if unknown).
	PeakRSS int64
}

// RunsPerSecond is the end-to-end rate: runs divided by the time from the
// first add to the last output read.
func (r GroupResult) RunsPerSecond() float64 {
	return float64(r.Runs) / r.Streamed.Seconds()
}

// StreamRate is the runs stream's throughput: outputs read per second
// while reading the finished group back.
func (r GroupResult) StreamRate() (runsPerSec, mbPerSec float64) {
	d := (r.Streamed - r.Done).Seconds()
	return float64(r.Runs) / d, float64(r.StreamedBytes) / (1 << 20) / d
}

// String formats the result for a terminal.
func (r GroupResult) String() string {
	sr, smb := r.StreamRate()
	return fmt.Sprintf("runs=%d completed=%d added=%s done=%s streamed=%s rate=%.0f runs/s "+
		"runs_stream=%.0f runs/s (%.1f MB/s of outputs) peak_rss=%.0f MB",
		r.Runs, r.Completed, r.Added.Round(time.Millisecond), r.Done.Round(time.Millisecond),
		r.Streamed.Round(time.Millisecond), r.RunsPerSecond(), sr, smb, float64(r.PeakRSS)/(1<<20))
}

// benchSpec is the output schema of benchmark runs: a few typed fields.
var benchSpec = &api.TaskSpec{OutputSchema: api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(`{
	"type": "object",
	"properties": {
		"summary": {"type": "string", "description": "one line about the company"},
		"employees": {"type": "integer"},
		"public": {"type": "boolean"},
		"tier": {"type": "string", "enum": ["small", "mid", "large"]}
	},
	"required": ["summary", "employees", "public", "tier"],
	"additionalProperties": false
}`)}}

// Group creates a group on tg, adds o.Runs runs in chunks, follows the
// events stream until the group is inactive, then reads every output back
// over the runs stream.
func Group(ctx context.Context, tg api.TaskGroups, o GroupOptions) (GroupResult, error) {
	if o.Chunk <= 0 || o.Chunk > api.MaxRunsPerAdd {
		o.Chunk = api.MaxRunsPerAdd
	}
	if o.Adders <= 0 {
		o.Adders = 4
	}
	res := GroupResult{Runs: o.Runs}
	g, err := tg.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{Metadata: api.Metadata{"bench": "group"}})
	if err != nil {
		return res, fmt.Errorf("create group: %w", err)
	}

	// Add the runs, a few calls in flight at once.
	start := time.Now()
	chunks := make(chan int)
	errs := make(chan error, o.Adders)
	var wg sync.WaitGroup
	for range o.Adders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for first := range chunks {
				n := min(o.Chunk, o.Runs-first)
				req := api.TaskGroupRunRequest{Inputs: make([]api.TaskRunInput, n), DefaultTaskSpec: benchSpec}
				for i := range req.Inputs {
					req.Inputs[i] = api.TaskRunInput{
						Input:     json.RawMessage(`{"company":"Company ` + strconv.Itoa(first+i) + `"}`),
						Processor: o.Processor,
					}
				}
				if _, err := tg.AddRuns(ctx, g.TaskGroupID, req); err != nil {
					errs <- fmt.Errorf("add runs at %d: %w", first, err)
					return
				}
			}
		}()
	}
	for first := 0; first < o.Runs; first += o.Chunk {
		chunks <- first
	}
	close(chunks)
	wg.Wait()
	select {
	case err := <-errs:
		return res, err
	default:
	}
	res.Added = time.Since(start)

	// Follow the events stream until the group is inactive.
	err = tg.GroupEvents(ctx, g.TaskGroupID, api.GroupEventsQuery{}, func(ev api.Event) error {
		if rs, ok := ev.(*api.TaskRunEvent); ok && rs.Run.Status == api.StatusCompleted {
			res.Completed++
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("follow events: %w", err)
	}
	res.Done = time.Since(start)

	// Read every output back.
	streamed := 0
	err = tg.GroupRuns(ctx, g.TaskGroupID, api.GroupRunsQuery{IncludeOutput: true}, func(ev *api.TaskRunEvent) error {
		if ev.Output == nil {
			return fmt.Errorf("run %s (%s) has no output", ev.Run.RunID, ev.Run.Status)
		}
		streamed++
		res.StreamedBytes += int64(len(ev.Output.Content))
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("stream runs: %w", err)
	}
	res.Streamed = time.Since(start)
	if streamed != o.Runs {
		return res, fmt.Errorf("streamed %d outputs, want %d", streamed, o.Runs)
	}
	res.PeakRSS = PeakRSS()
	return res, nil
}

// PeakRSS returns the process's peak resident set size in bytes, from
// /proc/self/status (0 where that is unavailable).
func PeakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}
