package main

import (
	"errors"
	"log/slog"
)

// benchCmd is the `taskpipe bench` command.
type benchCmd struct{}

// Run executes the command.
func (c *benchCmd) Run(cli *CLI, log *slog.Logger) error {
	// TODO(cli): replaced by the real command in this change series.
	return errors.New("bench: not built yet")
}
