package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/pipeline"
	"github.com/taskpipe/taskpipe/processors"
	"github.com/taskpipe/taskpipe/sinks"
	"github.com/taskpipe/taskpipe/sources"
	"github.com/taskpipe/taskpipe/specs"
)

// runCmd is the `taskpipe run` command: it runs a pipeline spec.
type runCmd struct {
	Pipeline    string  `arg:"" help:"The pipeline spec (YAML)."`
	Processor   string  `help:"Run every row with this processor instead of task.processor."`
	Target      string  `help:"Run on this target instead of target.engine: embedded, server or parallel." enum:",embedded,server,parallel" default:""`
	Processors  string  `help:"Processor config file (YAML) for the embedded engine; default: the built-in synthetic processor." env:"TASKPIPE_PROCESSORS" type:"path"`
	Limit       int64   `help:"Read only the first N source rows (0: all)."`
	DryRun      bool    `help:"Check the spec and print the plan (source, rows, mapping, target, table DDL); submit nothing."`
	NoWait      bool    `help:"Submit the rows, print the task group id and return without waiting for results."`
	RetryFailed bool    `help:"Submit again the rows whose runs failed, were cancelled or gave an invalid output."`
	NewGroup    bool    `help:"When the task group recorded for this target is not found (another API key, or a server that lost it), start a new group and submit again the rows that waited for it."`
	MaxFailed   int64   `help:"Exit with code 3 when more rows than this failed (failed, cancelled, invalid input or output); not checked with --no-wait." default:"0"`
	JSON        bool    `name:"json" help:"Print a machine-readable summary on standard output."`
	Estimate    bool    `help:"Print the expected cost of the rows (count × the processor's price) and exit; submit nothing."`
	MaxCost     float64 `help:"Refuse to start when the expected cost passes this many US dollars, and cap the task group's spending at it." default:"0"`
	URL         string  `name:"url" help:"Override target.url (server and parallel targets)." env:"TASKPIPE_URL"`
	StateDir    string  `help:"Override target.state_dir: the pipeline's memory of its group and rows (a new one runs every row again)." type:"path"`
	APIKey      string  `name:"api-key" help:"API key of the target; default: the variable named by target.api_key_env." env:"TASKPIPE_API_KEY"`
	Progress    string  `help:"Progress display: auto (a line on a terminal, else logs), line, log or none." enum:"auto,line,log,none" default:"auto"`
}

// runMemoryLimit is the soft limit of the Go heap of taskpipe run, used
// unless GOMEMLIMIT is set. A pipeline's live heap is about 100 MB whatever
// the number of rows (batches in flight); the limit keeps the collector's
// 5x target (see defaultGCPercent) from letting the heap grow past what
// the 1 GB budget of a run leaves beside DuckDB and SQLite.
const runMemoryLimit = 384 << 20

// Run executes the command.
func (c *runCmd) Run(cli *CLI, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(runMemoryLimit)
	}

	// Load and check the spec, flags applied; every problem is a usage error.
	if c.Limit < 0 || c.MaxFailed < 0 || c.MaxCost < 0 {
		return withExitCode(exitUsage, errors.New("run: --limit, --max-failed and --max-cost must not be negative"))
	}
	spec, err := specs.LoadPipelineWith(c.Pipeline,
		specs.Overrides{Engine: c.Target, URL: c.URL, Processor: c.Processor, StateDir: c.StateDir})
	if err != nil {
		return withExitCode(exitUsage, fmt.Errorf("run: %w", err))
	}
	backends := processors.Default(log)
	if c.Processors != "" {
		if backends, err = processors.Load(c.Processors, log); err != nil {
			return withExitCode(exitUsage, fmt.Errorf("run: %w", err))
		}
	}
	if _, ok := backends[spec.Task.Processor]; !ok && spec.Target.Engine == specs.EngineEmbedded {
		return withExitCode(exitUsage, fmt.Errorf(
			"run: task.processor: the embedded engine has no processor %q (it has %s); define it with --processors",
			spec.Task.Processor, strings.Join(slices.Sorted(maps.Keys(backends)), ", ")))
	}
	src, err := openSource(spec)
	if err != nil {
		return withExitCode(exitUsage, fmt.Errorf("run: %w", err))
	}
	defer src.Close()
	if c.DryRun {
		return c.dryRun(ctx, spec, src)
	}

	// Check the source's columns (a CSV source checks its files through),
	// the key and the mapping before anything is opened for writing, so a
	// bad spec leaves no state, engine or table behind.
	plan, err := pipeline.MakePlan(ctx, src, spec.Key, spec.Mapping, spec.TaskSpec)
	if err != nil {
		return withExitCode(exitUsage, fmt.Errorf("run: %w: %w", pipeline.ErrPlan, err))
	}
	for _, w := range plan.Warnings {
		log.Warn("task spec warning", "warning", w.Message)
	}

	// Price the run before anything is opened for writing.
	if c.Estimate || c.MaxCost > 0 {
		est, err := c.estimateCost(ctx, spec, src, backends)
		if err != nil {
			return withExitCode(exitUsage, fmt.Errorf("run: estimate cost: %w", err))
		}
		if c.Estimate {
			return printEstimate(os.Stdout, est, c.JSON)
		}
		if err := c.checkBudget(est); err != nil {
			return err
		}
	}

	// Hold the state dir before the sinks and an embedded engine open: an
	// engine recovers runs it finds running, which must never be another
	// live pipeline's, and a second run should hear that the state is in
	// use rather than meet a sink's file lock.
	stateDir := spec.Resolve(spec.Target.StateDir)
	lock, err := pipeline.LockState(stateDir)
	if err != nil {
		return stateDirError(err)
	}
	defer lock.Unlock()
	sinkList, closeSinks, err := openSinks(ctx, spec, log)
	if err != nil {
		return withExitCode(exitUsage, fmt.Errorf("run: %w", err))
	}
	defer closeSinks()
	target, err := pipeline.OpenTarget(ctx, spec.Target, pipeline.TargetOptions{
		StateDir: stateDir, Backends: backends, URL: c.URL, APIKey: c.APIKey, Logger: log,
		NoExecute: c.NoWait})
	if err != nil {
		return withExitCode(exitCodeOf(err), fmt.Errorf("run: %w", err))
	}
	defer target.Close(ctx)

	// Run, showing progress on standard error.
	sum, err := pipeline.Run(ctx, pipeline.Options{
		Name: pipelineName(spec), Source: src, Sinks: sinkList, Key: spec.Key,
		Mapping: spec.Mapping, TaskSpec: spec.TaskSpec, Processor: spec.Task.Processor,
		Metadata: api.Metadata(spec.Task.Metadata), MaxCost: c.MaxCost, Groups: target.Groups, Runs: target.Runs, Target: target.ID,
		StateDir: stateDir, StateLock: lock, Limit: c.Limit, RetryFailed: c.RetryFailed, NewGroup: c.NewGroup, NoWait: c.NoWait,
		AddsPerMinute: float64(spec.Target.AddsPerMinute), Logger: log,
		Progress: c.progress(log), ProgressEvery: c.progressEvery(),
	})
	if err != nil {
		if sum.GroupID != "" {
			log.Error("pipeline stopped; run it again to resume", "group_id", sum.GroupID)
		}
		return withExitCode(exitCodeOf(err), fmt.Errorf("run: %w", err))
	}
	if err := printSummary(os.Stdout, sum, c.JSON); err != nil {
		return err
	}
	// With --no-wait the rows are only submitted: judging failures is
	// taskpipe wait's job (rows failed by an earlier run must not fail a
	// submission that went well).
	if !c.NoWait && sum.Failed > c.MaxFailed {
		return withExitCode(exitFailedRows, fmt.Errorf(
			"run: %d rows failed, more than --max-failed %d; see the status and error columns",
			sum.Failed, c.MaxFailed))
	}
	return nil
}

// progress picks the progress display.
func (c *runCmd) progress(log *slog.Logger) func(pipeline.Progress) {
	mode := c.Progress
	if mode == "auto" {
		mode = "log"
		if term.IsTerminal(int(os.Stderr.Fd())) {
			mode = "line"
		}
	}
	switch mode {
	case "line":
		return pipeline.TerminalProgress(os.Stderr)
	case "log":
		return pipeline.LogProgress(log)
	}
	return nil
}

func (c *runCmd) progressEvery() time.Duration {
	if c.Progress == "line" || (c.Progress == "auto" && term.IsTerminal(int(os.Stderr.Fd()))) {
		return 200 * time.Millisecond
	}
	return 10 * time.Second
}

// pipelineName is the spec's name, else its file name.
func pipelineName(p *specs.Pipeline) string {
	if p.Name != "" {
		return p.Name
	}
	return filepath.Base(p.Dir)
}

// openSource opens the source the spec names, paths relative to the spec.
func openSource(p *specs.Pipeline) (pipeline.Source, error) {
	s := p.Source
	resolve := func(paths []string) []string {
		out := make([]string, len(paths))
		for i, x := range paths {
			out[i] = p.Resolve(x)
		}
		return out
	}
	switch {
	case len(s.Parquet) > 0:
		return sources.NewParquet(sources.ParquetOptions{Paths: resolve(s.Parquet)})
	case s.CSV != nil:
		return sources.NewCSV(sources.CSVOptions{Paths: resolve(s.CSV.Paths),
			Delimiter: s.CSV.Delimiter, Header: s.CSV.Header})
	case s.DuckDB != nil:
		return sources.NewDuckDB(sources.DuckDBOptions{Database: p.Resolve(s.DuckDB.Database),
			Query: s.DuckDB.Query, BaseDir: p.Dir})
	}
	return nil, errors.New("source: must give parquet, csv or duckdb")
}

// openSinks opens the sinks the spec names, creating their folders; log
// hears of a sink waiting for another process to close its file.
func openSinks(ctx context.Context, p *specs.Pipeline, log *slog.Logger) ([]pipeline.Sink, func(), error) {
	var list []pipeline.Sink
	var closers []func(context.Context) error
	closeAll := func() {
		for _, c := range slices.Backward(closers) {
			_ = c(context.WithoutCancel(ctx))
		}
	}
	if d := p.Sink.DuckDB; d != nil {
		path := p.Resolve(d.Database)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, closeAll, fmt.Errorf("sink.duckdb.database: %w", err)
		}
		s, err := sinks.NewDuckDBFile(path, d.Table)
		if err != nil {
			return nil, closeAll, fmt.Errorf("sink.duckdb: %w", err)
		}
		s.SetLogger(log)
		list, closers = append(list, s), append(closers, s.Close)
	}
	if pq := p.Sink.Parquet; pq != nil {
		path := p.Resolve(pq.Path)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			closeAll()
			return nil, func() {}, fmt.Errorf("sink.parquet.path: %w", err)
		}
		s := sinks.NewParquet(path)
		list, closers = append(list, s), append(closers, s.Close)
	}
	return list, closeAll, nil
}

// dryRun prints the plan and submits nothing.
func (c *runCmd) dryRun(ctx context.Context, p *specs.Pipeline, src pipeline.Source) error {
	plan, err := pipeline.MakePlan(ctx, src, p.Key, p.Mapping, p.TaskSpec)
	if err != nil {
		return withExitCode(exitUsage, fmt.Errorf("run: %w: %w", pipeline.ErrPlan, err))
	}
	rows := int64(-1)
	if cnt, ok := src.(pipeline.Counter); ok {
		if rows, err = cnt.Count(ctx); err != nil {
			return withExitCode(exitUsage, fmt.Errorf("run: %w", err))
		}
		if c.Limit > 0 {
			rows = min(rows, c.Limit)
		}
	}
	out := dryRunPlan{
		Pipeline: pipelineName(p), Source: describeSource(p), Rows: rows,
		Columns: plan.Columns, Key: p.Key, Mapping: mappingText(p, plan.Columns),
		Processor: p.Task.Processor, Target: p.Target.Engine, TargetURL: p.Target.URL,
		StateDir: p.Resolve(p.Target.StateDir), SpecHash: plan.SpecHash,
		Warnings: plan.Warnings,
	}
	if d := p.Sink.DuckDB; d != nil {
		out.Sinks = append(out.Sinks, fmt.Sprintf("duckdb %s table %s", p.Resolve(d.Database), d.Table))
		out.DDL = plan.Table.DDL(d.Table)
	}
	if pq := p.Sink.Parquet; pq != nil {
		out.Sinks = append(out.Sinks, "parquet "+p.Resolve(pq.Path))
		if out.DDL == "" {
			out.DDL = plan.Table.DDL(strings.TrimSuffix(filepath.Base(pq.Path), filepath.Ext(pq.Path)))
		}
	}
	if c.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	out.print(os.Stdout)
	return nil
}

// dryRunPlan is what --dry-run prints.
type dryRunPlan struct {
	Pipeline  string            `json:"pipeline"`
	Source    string            `json:"source"`
	Rows      int64             `json:"rows"`
	Columns   []pipeline.Column `json:"columns"`
	Key       []string          `json:"key"`
	Mapping   []string          `json:"mapping"`
	Processor string            `json:"processor"`
	Target    string            `json:"target"`
	TargetURL string            `json:"target_url,omitempty"`
	StateDir  string            `json:"state_dir"`
	Sinks     []string          `json:"sinks"`
	SpecHash  string            `json:"spec_hash"`
	DDL       string            `json:"ddl"`
	Warnings  []api.Warning     `json:"warnings,omitempty"`
}

func (d dryRunPlan) print(w io.Writer) {
	fmt.Fprintf(w, "pipeline   %s (dry run: nothing submitted)\n", d.Pipeline)
	fmt.Fprintf(w, "source     %s\n", d.Source)
	if d.Rows >= 0 {
		fmt.Fprintf(w, "rows       %d\n", d.Rows)
	} else {
		fmt.Fprintf(w, "rows       (counted when read)\n")
	}
	cols := make([]string, len(d.Columns))
	for i, c := range d.Columns {
		cols[i] = c.Name + " " + c.DuckDBType
	}
	fmt.Fprintf(w, "columns    %s\n", strings.Join(cols, ", "))
	fmt.Fprintf(w, "key        %s\n", strings.Join(d.Key, ", "))
	fmt.Fprintf(w, "mapping    %s\n", strings.Join(d.Mapping, "\n           "))
	fmt.Fprintf(w, "processor  %s\n", d.Processor)
	target := d.Target
	if d.TargetURL != "" {
		target += " " + d.TargetURL
	}
	fmt.Fprintf(w, "target     %s (state in %s)\n", target, d.StateDir)
	fmt.Fprintf(w, "sinks      %s\n", strings.Join(d.Sinks, "; "))
	fmt.Fprintf(w, "spec hash  %s\n", d.SpecHash)
	for _, wn := range d.Warnings {
		fmt.Fprintf(w, "warning    %s\n", wn.Message)
	}
	fmt.Fprintf(w, "\n%s\n", d.DDL)
}

// describeSource names the source of a spec in one line.
func describeSource(p *specs.Pipeline) string {
	s := p.Source
	switch {
	case len(s.Parquet) > 0:
		return "parquet " + strings.Join(s.Parquet, ", ")
	case s.CSV != nil:
		return fmt.Sprintf("csv %s (delimiter %q)", strings.Join(s.CSV.Paths, ", "), s.CSV.Delimiter)
	case s.DuckDB != nil:
		db := "in-memory"
		if s.DuckDB.Database != "" {
			db = s.DuckDB.Database
		}
		return fmt.Sprintf("duckdb query on %s: %s", db, strings.Join(strings.Fields(s.DuckDB.Query), " "))
	}
	return "none"
}

// mappingText renders the mapping, field <- column or constant.
func mappingText(p *specs.Pipeline, cols []pipeline.Column) []string {
	if len(p.Mapping) == 0 {
		out := make([]string, len(cols))
		for i, c := range cols {
			out[i] = c.Name + " <- " + c.Name
		}
		return out
	}
	var out []string
	for _, f := range slices.Sorted(maps.Keys(p.Mapping)) {
		e := p.Mapping[f]
		if e.HasValue {
			b, _ := json.Marshal(e.Value)
			out = append(out, fmt.Sprintf("%s <- constant %s", f, b))
			continue
		}
		out = append(out, f+" <- "+e.Column)
	}
	return out
}

// printSummary prints a pipeline summary, as text or JSON.
func printSummary(w io.Writer, s pipeline.Summary, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		return enc.Encode(s)
	}
	if !s.Waited {
		fmt.Fprintln(w, s.GroupID)
		return nil
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(s.Statuses)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, s.Statuses[k]))
	}
	fmt.Fprintf(w, "group %s: %d rows (%s); submitted %d, reattached %d, skipped %d",
		s.GroupID, s.Rows, strings.Join(parts, ", "), s.Submitted, s.Reattached, s.Skipped)
	if s.Adopted > 0 {
		fmt.Fprintf(w, ", adopted %d", s.Adopted)
	}
	if s.Duplicates > 0 {
		fmt.Fprintf(w, ", duplicate keys %d", s.Duplicates)
	}
	fmt.Fprintf(w, " in %s\n", s.Elapsed.Round(time.Millisecond))
	return nil
}

// stateDirError reports an error creating or locking the state directory.
// One the spec can fix (permission denied, a read-only file system, a file
// in the way) is a usage error naming target.state_dir.
func stateDirError(err error) error {
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) ||
		errors.Is(err, syscall.ENOTDIR) {
		return withExitCode(exitUsage, fmt.Errorf("run: target.state_dir: %w", err))
	}
	return fmt.Errorf("run: %w", err)
}

// exitCodeOf maps an error onto the process exit code.
func exitCodeOf(err error) int {
	var netErr net.Error
	var urlErr *url.Error
	switch {
	case errors.Is(err, pipeline.ErrPlan), errors.Is(err, api.ErrPaymentRequired),
		errors.Is(err, sinks.ErrColumnsDiffer), errors.Is(err, pipeline.ErrGroupLost):
		return exitUsage
	case errors.Is(err, pipeline.ErrUnreachable), errors.Is(err, api.ErrUnavailable),
		errors.Is(err, api.ErrUnauthorized), errors.Is(err, syscall.ECONNREFUSED),
		errors.As(err, &netErr), errors.As(err, &urlErr):
		return exitUnreachable
	}
	return exitError
}
