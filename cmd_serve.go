package main

import (
	"errors"
	"log/slog"
)

// serveCmd is the `taskpipe serve` command.
type serveCmd struct{}

// Run executes the command.
func (c *serveCmd) Run(cli *CLI, log *slog.Logger) error {
	// TODO(cli): replaced by the real command in this change series.
	return errors.New("serve: not built yet")
}
