package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/pipeline"
	"github.com/taskpipe/taskpipe/processors"
	"github.com/taskpipe/taskpipe/specs"
)

// groupTarget are the flags that say where a group lives, shared by status
// and wait: a server (URL and key) or an embedded engine's state directory.
type groupTarget struct {
	URL        string `name:"url" help:"Base URL of a taskpipe server or Parallel's API; empty uses the embedded engine in --state-dir." env:"TASKPIPE_URL"`
	APIKey     string `name:"api-key" help:"API key for --url (default: $PARALLEL_API_KEY)." env:"TASKPIPE_API_KEY"`
	StateDir   string `help:"State directory of an embedded pipeline (target.state_dir)." default:".taskpipe" env:"TASKPIPE_STATE_DIR" type:"path"`
	Processors string `help:"Processor config file (YAML) of the embedded engine." env:"TASKPIPE_PROCESSORS" type:"path"`
}

// open opens the group's target. With execute, an embedded engine is
// started, so that runs left queued by `taskpipe run --no-wait` execute
// while wait waits, unless another process (a running pipeline) holds the
// state directory: then, as for status, the engine only observes.
func (g *groupTarget) open(ctx context.Context, log *slog.Logger, execute bool) (*pipeline.Target, func(), error) {
	t := specs.Target{Engine: specs.EngineEmbedded}
	o := pipeline.TargetOptions{StateDir: g.StateDir, URL: g.URL, APIKey: g.APIKey, Logger: log,
		Observe: !execute}
	release := func() {}
	if g.URL != "" {
		t.Engine = specs.EngineServer
		if o.APIKey == "" {
			o.APIKey = os.Getenv(specs.DefaultAPIKeyEnv)
		}
	} else {
		if _, err := os.Stat(filepath.Join(g.StateDir, "engine.db")); err != nil {
			return nil, nil, withExitCode(exitUsage, fmt.Errorf(
				"no embedded engine state in %s (give --state-dir, or --url for a server): %w",
				g.StateDir, err))
		}
		o.Backends = processors.Default(log)
		if g.Processors != "" {
			b, err := processors.Load(g.Processors, log)
			if err != nil {
				return nil, nil, withExitCode(exitUsage, err)
			}
			o.Backends = b
		}
		if execute {
			lock, err := pipeline.LockState(g.StateDir)
			switch {
			case errors.Is(err, pipeline.ErrStateLocked):
				log.Info("a pipeline is running on this state; waiting without executing runs")
				o.Observe = true
			case err != nil:
				return nil, nil, err
			default:
				release = func() { lock.Unlock() }
			}
		}
	}
	target, err := pipeline.OpenTarget(ctx, t, o)
	if err != nil {
		release()
		return nil, nil, withExitCode(exitCodeOf(err), err)
	}
	return target, func() {
		target.Close(ctx)
		release()
	}, nil
}

// statusCmd is the `taskpipe status` command.
type statusCmd struct {
	Group string `arg:"" help:"The task group id (printed by taskpipe run)."`
	JSON  bool   `name:"json" help:"Print the group as JSON."`
	groupTarget
}

// Run executes the command.
func (c *statusCmd) Run(cli *CLI, log *slog.Logger) error {
	ctx := context.Background()
	target, closeTarget, err := c.open(ctx, log, false)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	defer closeTarget()
	g, err := target.Groups.GetTaskGroup(ctx, c.Group)
	if err != nil {
		code := exitCodeOf(err)
		if errors.Is(err, api.ErrNotFound) {
			code = exitUsage
		}
		return withExitCode(code, fmt.Errorf("status: group %s: %w", c.Group, err))
	}
	return printGroup(os.Stdout, g, c.JSON)
}

// printGroup prints a group's status summary.
func printGroup(w io.Writer, g api.TaskGroup, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(g)
	}
	state := "done"
	if g.Status.IsActive {
		state = "active"
	}
	var parts []string
	for _, s := range api.AllStatuses {
		if n := g.Status.TaskRunStatusCounts[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", s, n))
		}
	}
	switch n := g.Status.NumTaskRuns; n {
	case 0:
		fmt.Fprintf(w, "group %s: %s, no runs\n", g.TaskGroupID, state)
	case 1:
		fmt.Fprintf(w, "group %s: %s, 1 run (%s)\n", g.TaskGroupID, state, strings.Join(parts, ", "))
	default:
		fmt.Fprintf(w, "group %s: %s, %d runs (%s)\n", g.TaskGroupID, state, n,
			strings.Join(parts, ", "))
	}
	return nil
}
