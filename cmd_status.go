package main

import (
	"errors"
	"log/slog"
)

// statusCmd is the `taskpipe status` command.
type statusCmd struct{}

// Run executes the command.
func (c *statusCmd) Run(cli *CLI, log *slog.Logger) error {
	// TODO(cli): replaced by the real command in this change series.
	return errors.New("status: not built yet")
}
