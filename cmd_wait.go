package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/taskpipe/taskpipe/api"
)

// waitCmd is the `taskpipe wait` command: it blocks until a task group is
// no longer active, for schedulers (an Airflow sensor after
// `taskpipe run --no-wait`).
type waitCmd struct {
	Group     string        `arg:"" help:"The task group id (printed by taskpipe run --no-wait)."`
	Timeout   time.Duration `help:"Give up after this long with exit code 5 (0: wait for ever)." default:"0"`
	MaxFailed int64         `help:"Exit with code 3 when more runs than this failed or were cancelled (-1: do not check)." default:"-1"`
	JSON      bool          `name:"json" help:"Print the final group status as JSON."`
	groupTarget
}

// Run executes the command.
func (c *waitCmd) Run(cli *CLI, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if c.Timeout < 0 {
		return withExitCode(exitUsage, errors.New("wait: --timeout must not be negative"))
	}
	waitCtx := ctx
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	target, closeTarget, err := c.open(ctx, log, true)
	if err != nil {
		return fmt.Errorf("wait: %w", err)
	}
	defer closeTarget()

	g, answered, err := waitGroup(waitCtx, target.Groups, c.Group, log)
	switch {
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil && !answered:
		return withExitCode(exitUnreachable, fmt.Errorf("wait: target did not answer within %s: %w",
			c.Timeout, err))
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return withExitCode(exitTimeout, fmt.Errorf("wait: group %s still active after %s",
			c.Group, c.Timeout))
	case errors.Is(err, api.ErrNotFound):
		return withExitCode(exitUsage, fmt.Errorf("wait: group %s: %w", c.Group, err))
	case err != nil:
		return withExitCode(exitCodeOf(err), fmt.Errorf("wait: %w", err))
	}
	if err := printGroup(os.Stdout, g, c.JSON); err != nil {
		return err
	}
	counts := g.Status.TaskRunStatusCounts
	if bad := counts[api.StatusFailed] + counts[api.StatusCancelled]; c.MaxFailed >= 0 && bad > c.MaxFailed {
		return withExitCode(exitFailedRows, fmt.Errorf("wait: %d runs failed or were cancelled, more than --max-failed %d",
			bad, c.MaxFailed))
	}
	return nil
}

// waitGroup follows the group's events stream, resuming after drops, until
// the group is inactive; it returns the final status, and whether the
// target ever answered (a timeout before that means it is unreachable).
func waitGroup(ctx context.Context, groups api.TaskGroups, id string,
	log *slog.Logger) (api.TaskGroup, bool, error) {
	answered := false
	cursor := ""
	failures := 0
	for {
		g, err := groups.GetTaskGroup(ctx, id)
		if err != nil {
			return api.TaskGroup{}, answered, err
		}
		answered = true
		if !g.Status.IsActive {
			return g, true, nil
		}
		err = groups.GroupEvents(ctx, id, api.GroupEventsQuery{LastEventID: cursor},
			func(ev api.Event) error {
				switch e := ev.(type) {
				case *api.TaskGroupStatusEvent:
					cursor = e.EventID
				case *api.TaskRunEvent:
					if e.EventID != nil {
						cursor = *e.EventID
					}
				}
				return nil
			})
		if ctx.Err() != nil {
			return api.TaskGroup{}, true, ctx.Err()
		}
		if err != nil {
			failures++
			if failures > 8 {
				return api.TaskGroup{}, true, err
			}
			log.Warn("group events stream dropped; resuming", "group_id", id, "error", err)
			select {
			case <-ctx.Done():
				return api.TaskGroup{}, true, ctx.Err()
			case <-time.After(time.Duration(failures) * 500 * time.Millisecond):
			}
			continue
		}
		failures = 0
	}
}
