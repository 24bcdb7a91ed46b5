// Command taskpipe is a self-hostable Task Group engine and server that
// speaks Parallel's Task API, and a pipeline that runs the rows of a table
// through it into typed DuckDB or Parquet tables.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"runtime/debug"
	"runtime/pprof"
	"strings"

	"github.com/alecthomas/kong"
)

// Exit codes of taskpipe, documented in README.md.
const (
	exitOK          = 0
	exitError       = 1 // an unexpected error
	exitUsage       = 2 // bad flags or a bad spec or config file
	exitFailedRows  = 3 // more failed rows than --max-failed allowed
	exitUnreachable = 4 // the target server or upstream could not be reached
	exitTimeout     = 5 // wait gave up before the group finished
)

// exitCodeError carries the exit code a command wants for its error.
type exitCodeError struct {
	code int
	err  error
}

func (e *exitCodeError) Error() string { return e.err.Error() }
func (e *exitCodeError) Unwrap() error { return e.err }

// withExitCode makes err end the process with code.
func withExitCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitCodeError{code: code, err: err}
}

// CLI is the command line of taskpipe.
type CLI struct {
	LogLevel   slog.Level `help:"Log level: debug, info, warn or error." default:"info" env:"TASKPIPE_LOG_LEVEL"`
	LogFormat  string     `help:"Log format: text or json." enum:"text,json" default:"text" env:"TASKPIPE_LOG_FORMAT"`
	CPUProfile string     `name:"cpu-profile" help:"Write a Go CPU profile of the command to this file (for go tool pprof)." type:"path" placeholder:"FILE"`

	Serve  serveCmd  `cmd:"" help:"Run the Task Group API server."`
	Run    runCmd    `cmd:"" help:"Run a pipeline: rows in, typed result table out."`
	Status statusCmd `cmd:"" help:"Show a task group's status summary."`
	Wait   waitCmd   `cmd:"" help:"Wait until a task group is no longer active (for schedulers)."`
	SQL    sqlCmd    `cmd:"" name:"sql" help:"Query a DuckDB result database and print the rows."`
	Bench  benchCmd  `cmd:"" help:"Measure engine and pipeline throughput."`
}

// newLogger builds the process logger from the global flags; it writes to
// standard error so that standard output stays machine-readable.
func (c *CLI) newLogger() *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// defaultGCPercent is the garbage collector's target, used unless GOGC is
// set. The live Go heap of a pipeline or server is small (DuckDB and SQLite
// keep their memory outside it) and churns fast, so collecting at 5x the
// live heap instead of 2x cuts the collector's CPU by about two thirds.
// taskpipe run also caps the heap (see runMemoryLimit).
const defaultGCPercent = 400

// tuneGC applies the garbage collector default.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
}

func main() {
	tuneGC()
	var cli CLI
	parser, err := kong.New(&cli,
		kong.Name("taskpipe"),
		kong.Description("Task groups as a service, and as a SQL pipeline step."),
		kong.UsageOnError(),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "taskpipe:", err)
		os.Exit(exitError)
	}
	kctx, err := parser.Parse(joinNegativeValues(os.Args[1:]))
	if err != nil {
		// Bad flags, arguments or values: a usage error, explained on
		// standard error (standard output carries only results).
		var perr *kong.ParseError
		if errors.As(err, &perr) && perr.Context != nil {
			perr.Context.Stdout = os.Stderr
			_ = perr.Context.PrintUsage(true)
		}
		fmt.Fprintln(os.Stderr, "taskpipe:", err)
		os.Exit(exitUsage)
	}
	err = cli.runProfiled(kctx)
	if err == nil {
		os.Exit(exitOK)
	}
	fmt.Fprintln(os.Stderr, "taskpipe:", err)
	var ec *exitCodeError
	if errors.As(err, &ec) {
		os.Exit(ec.code)
	}
	os.Exit(exitError)
}

// negativeValue matches a negative number or duration given as a flag's
// value: -3, -0.5, -1s.
var negativeValue = regexp.MustCompile(`^-[0-9][0-9.]*[a-z]*$`)

// joinNegativeValues joins a long flag and a negative value that follows
// it (--max-failed -1 becomes --max-failed=-1): kong would take the value
// for a short flag, and the command's own check should judge it.
func joinNegativeValues(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "--") && len(a) > 2 && !strings.Contains(a, "=") &&
			i+1 < len(args) && negativeValue.MatchString(args[i+1]) {
			a += "=" + args[i+1]
			i++
		}
		out = append(out, a)
	}
	return out
}

// runProfiled runs the chosen command, under the CPU profiler when
// --cpu-profile names a file.
func (c *CLI) runProfiled(kctx *kong.Context) error {
	if c.CPUProfile == "" {
		return kctx.Run(c, c.newLogger())
	}
	f, err := os.Create(c.CPUProfile)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer pprof.StopCPUProfile()
	return kctx.Run(c, c.newLogger())
}
