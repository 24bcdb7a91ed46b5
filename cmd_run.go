package main

import (
	"errors"
	"log/slog"
)

// runCmd is the `taskpipe run` command.
type runCmd struct{}

// Run executes the command.
func (c *runCmd) Run(cli *CLI, log *slog.Logger) error {
	// TODO(cli): replaced by the real command in this change series.
	return errors.New("run: not built yet")
}
