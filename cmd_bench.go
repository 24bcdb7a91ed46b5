package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/taskpipe/taskpipe/bench"
	"github.com/taskpipe/taskpipe/engine"
	"github.com/taskpipe/taskpipe/processors"
)

// benchCmd is `taskpipe bench`: the measurements behind docs/benchmarks.md.
type benchCmd struct {
	Group    benchGroupCmd    `cmd:"" help:"One task group through the engine: add, complete, read every output back."`
	Pipeline benchPipelineCmd `cmd:"" help:"taskpipe run over a generated Parquet file, against a plain DuckDB copy of it."`
}

// benchGroupCmd measures one group of synthetic runs.
type benchGroupCmd struct {
	Runs        int           `help:"Runs in the group." default:"100000"`
	Chunk       int           `help:"Runs per add-runs call (at most 1000)." default:"1000"`
	Adders      int           `help:"Add-runs calls in flight at once." default:"4"`
	Latency     time.Duration `help:"Simulated latency of each run (fixed); 0 completes at once." default:"0s"`
	Concurrency int           `help:"Processor concurrency limit." default:"20000"`
	HTTP        bool          `help:"Serve the engine on 127.0.0.1 and drive it through the HTTP client."`
	Dir         string        `help:"Folder for the engine's database (default: a temporary folder, removed after)." type:"path"`
	JSON        bool          `help:"Print the result as JSON."`
}

// Run executes the measurement and prints its result.
func (c *benchGroupCmd) Run(cli *CLI, log *slog.Logger) error {
	ctx := context.Background()
	dir := c.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "taskpipe-bench-")
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	synthetic, err := processors.NewSynthetic(processors.SyntheticOptions{
		Latency: processors.LatencyOptions{Distribution: processors.LatencyFixed, Mean: c.Latency},
	})
	if err != nil {
		return withExitCode(exitUsage, fmt.Errorf("bench: %w", err))
	}
	backends := map[string]engine.Backend{"synthetic": {Processor: synthetic, Concurrency: c.Concurrency}}
	local, err := bench.StartLocal(ctx, dir, backends, c.HTTP)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer local.Stop(ctx)

	res, err := bench.Group(ctx, local.Groups, bench.GroupOptions{Runs: c.Runs, Chunk: c.Chunk, Adders: c.Adders, Processor: "synthetic"})
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if c.JSON {
		streamRuns, streamMB := res.StreamRate()
		return json.NewEncoder(os.Stdout).Encode(map[string]any{
			"runs": res.Runs, "completed": res.Completed, "http": c.HTTP,
			"added_s": res.Added.Seconds(), "done_s": res.Done.Seconds(), "streamed_s": res.Streamed.Seconds(),
			"runs_per_s": res.RunsPerSecond(), "runs_stream_runs_per_s": streamRuns,
			"runs_stream_mb_per_s": streamMB, "peak_rss_mb": float64(res.PeakRSS) / (1 << 20),
		})
	}
	fmt.Println(res)
	return nil
}

// benchPipelineCmd measures `taskpipe run` on a generated Parquet file
// against a plain DuckDB copy of the same rows.
type benchPipelineCmd struct {
	Rows int    `help:"Rows in the generated Parquet file." default:"1000000"`
	Dir  string `help:"Folder for the fixture and outputs, kept after (default: a temporary folder, removed after); outputs of an earlier run in it are removed first." type:"path"`
}

// Run generates the fixture, times the baseline copy, then runs the
// pipeline as a child process so that its peak RSS is its own.
func (c *benchPipelineCmd) Run(cli *CLI, log *slog.Logger) error {
	ctx := context.Background()
	dir := c.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "taskpipe-bench-pipeline-")
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	fx, err := bench.WritePipelineFixture(ctx, dir, c.Rows)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	baseline, err := bench.DuckDBCopy(ctx, fx.Parquet, filepath.Join(dir, "baseline.duckdb"))
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}

	// Run the pipeline in a child process of this binary.
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	cmd := exec.CommandContext(ctx, self, "run", fx.Spec, "--progress", "none")
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("bench: run pipeline: %w", err)
	}
	took := time.Since(start)
	var peakKB int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		peakKB = ru.Maxrss
	}
	counts, err := bench.CountByStatus(ctx, fx.Database, fx.Table)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	fmt.Printf("rows=%d pipeline=%s (%.0f rows/s) peak_rss=%.0f MB duckdb_copy=%s ratio=%.1fx results=%v\n",
		c.Rows, took.Round(time.Millisecond), float64(c.Rows)/took.Seconds(), float64(peakKB)/1024,
		baseline.Round(time.Millisecond), took.Seconds()/baseline.Seconds(), counts)
	if counts["completed"] != int64(c.Rows) {
		return fmt.Errorf("bench: %d rows completed, want %d", counts["completed"], c.Rows)
	}
	return nil
}
