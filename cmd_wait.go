package main

import (
	"errors"
	"log/slog"
)

// waitCmd is the `taskpipe wait` command.
type waitCmd struct{}

// Run executes the command.
func (c *waitCmd) Run(cli *CLI, log *slog.Logger) error {
	// TODO(cli): replaced by the real command in this change series.
	return errors.New("wait: not built yet")
}
